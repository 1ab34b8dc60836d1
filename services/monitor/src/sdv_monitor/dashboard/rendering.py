"""Jinja2 for the dashboard: templates from the package, every value HTML-escaped (devices and
apps name things; a name is text, never markup), and a Content-Security-Policy that lets the
pages run only the package's own scripts and talk only to the monitor."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from sdv_monitor.dashboard import shapes

STATIC_DIR = Path(__file__).parent / "static"
# No inline script or style, no other origin, no framing: markup that slipped through escaping
# could still not run, load or send anything.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


def when(value: datetime | None) -> str:
    """A moment as people read it, in UTC (`2026-11-30 14:02:07 UTC`)."""
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(value: datetime | None) -> str:
    return "" if value is None else value.isoformat()


def megabytes(value: int | None) -> str:
    return "—" if value is None else f"{value / 1_048_576:.1f} MB"


class Pages:
    def __init__(self, version: str) -> None:
        self.version = version
        self.env = Environment(loader=PackageLoader("sdv_monitor.dashboard", "templates"),
                               autoescape=select_autoescape(default=True, default_for_string=True),
                               undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.env.filters.update(when=when, iso=iso, duration=shapes.duration, percent=shapes.percent,
                                megabytes=megabytes)
        # Pages with a live part: `X.html` beside `X_live.html`.
        self.live_parts = {n.replace("_live.html", ".html") for n in self.env.list_templates()
                           if n.endswith("_live.html")}
        self.env.globals.update(static=self.static, OUTCOME_WORDS=shapes.OUTCOME_WORDS,
                                OUTCOME_MARKS=shapes.OUTCOME_MARKS)

    def static(self, path: str) -> str:
        return f"/static/{path}?v={self.version}"

    def render(self, request: Request, template: str, *, http_status: int = 200,
               **context: Any) -> HTMLResponse:
        """The page, or only its live part when the page asks for it again (`?part=live`)."""
        if request.query_params.get("part") == "live" and template in self.live_parts:
            template = template.replace(".html", "_live.html")
        body = self.env.get_template(template).render(
            path=request.url.path, part_url=_part_url(request), version=self.version, **context)
        return HTMLResponse(body, status_code=http_status, headers=HEADERS)


def _part_url(request: Request) -> str:
    """This page's own address (relative), asking for its live part."""
    url = request.url.include_query_params(part="live")
    return f"{url.path}?{url.query}"
