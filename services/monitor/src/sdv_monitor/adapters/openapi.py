"""The HTTP API's OpenAPI document, with the response types described by the same msgspec
structs the API encodes (`sdv_events.schemas.monitor`): one definition, no pydantic copy."""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

REF = "#/components/schemas/{name}"


def json_response(view: type, description: str = "OK") -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route answering `view`, the 404/422 answers beside it."""
    return {200: {"description": description,
                  "content": {"application/json": {"schema": {"$ref": REF.format(name=view.__name__)}}}},
            404: {"description": "Not found"}}


def install(app: FastAPI, views: list[type]) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, routes=app.routes,
                              description=app.description)
            _, components = msgspec.json.schema_components(views, ref_template=REF)
            doc.setdefault("components", {}).setdefault("schemas", {}).update(components)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
