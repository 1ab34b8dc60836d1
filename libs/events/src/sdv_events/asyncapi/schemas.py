"""JSON Schemas of the types on the bus, as the document's `components.schemas`: msgspec
generates them from the same Structs that decode the messages, so the document cannot describe
a shape the code does not read."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

REF_TEMPLATE = "#/components/schemas/{name}"
Schema = dict[str, Any]


class SchemaSet:
    """Every type the document names, resolved once: `ref(t)` is what a message or a property
    holds for `t` (a `$ref` for a Struct, the schema itself for `None`, a list …)."""

    def __init__(self, types: Iterable[Any]) -> None:
        unique = list(dict.fromkeys(types))
        refs, self.components = msgspec.json.schema_components(unique, ref_template=REF_TEMPLATE)
        self._refs: dict[Any, Schema] = dict(zip(unique, refs, strict=True))

    def ref(self, type_: Any) -> Schema:
        try:
            return self._refs[type_]
        except KeyError:
            raise KeyError(f"{type_!r} was not given to the SchemaSet") from None

    def name(self, type_: Any) -> str:
        """The component name of a Struct (`RolloutView`), else a readable rendering."""
        ref = self.ref(type_).get("$ref", "")
        if ref.startswith(REF_TEMPLATE.format(name="")):
            return str(ref.rsplit("/", 1)[-1])
        return "null" if type_ is None or type_ is type(None) else repr(type_)
