"""A dashboard page whose read views cannot be read answers 503 with a page that says so (the
JSON API a 503 with a JSON reason), never a stack trace."""

from __future__ import annotations

from typing import Any

import httpx

from sdv_monitor.adapters.console_tail import ConsoleTail
from sdv_monitor.adapters.http_api import create_app
from sdv_monitor.adapters.live import LiveFeed
from sdv_monitor.adapters.metrics import Metrics


class DatabaseAway:
    """Queries whose every read fails as a pool does when PostgreSQL is gone."""

    pool: Any = None
    s = "x"

    def __getattr__(self, name: str) -> Any:
        async def read(*args: Any, **kwargs: Any) -> Any:
            raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")

        return read


async def _no_problems() -> list[str]:
    return []


async def _no_health() -> dict[str, Any]:
    return {}


async def test_pages_say_the_views_cannot_be_read_when_the_database_is_away() -> None:
    live = LiveFeed(js=None)  # type: ignore[arg-type]
    app = create_app(DatabaseAway(), _no_problems, live, Metrics(None, "x", live, _no_health),  # type: ignore[arg-type]
                     ConsoleTail(js=None))  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://monitor") as client:
        for path in ("/", "/devices", "/devices/car-1", "/rollouts", "/rollouts/r-1", "/alerts"):
            page = await client.get(path)
            assert page.status_code == 503, path
            assert page.headers["content-type"].startswith("text/html"), path
            assert "cannot read its views now" in page.text, path
        api = await client.get("/api/status")
    assert api.status_code == 503
    assert api.json()["error"] == "unavailable"
