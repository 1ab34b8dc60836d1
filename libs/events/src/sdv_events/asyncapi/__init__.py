"""The bus contract as an AsyncAPI 3.0 document (`document.py` builds it from the code). The
generated document ships in this package (`asyncapi.json`, a copy of `docs/asyncapi.json`) so
that any process can serve it without importing the services that define the commands:
`tools/asyncapi.py` writes both, and a test fails when they are stale."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

DOCUMENT_FILE = "asyncapi.json"
REGENERATE = "./dev asyncapi"


def render(document: dict[str, Any]) -> str:
    """The document as committed: indented JSON, keys in the order built, a final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def shipped_document() -> bytes:
    """The generated document shipped with this package."""
    return resources.files(__package__).joinpath(DOCUMENT_FILE).read_bytes()
