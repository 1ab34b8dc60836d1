"""The monitor serves the bus contract at `/asyncapi.json`: the committed docs/asyncapi.json,
byte for byte (tests/unit/test_asyncapi_document.py proves that one current and valid)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[3] / "docs" / "asyncapi.json"


async def test_the_monitor_serves_the_committed_asyncapi_document(monitor: Any) -> None:
    response = await monitor.http.get("/asyncapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == DOCS.read_bytes()
    served = response.json()
    assert served["asyncapi"] == "3.0.0"
    assert "sdv.cmd.monitor.status" in served["channels"]
