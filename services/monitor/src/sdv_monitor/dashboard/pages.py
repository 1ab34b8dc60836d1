"""The dashboard's pages: the read views rendered as HTML (the same queries as the JSON API),
each with a live part the page fetches again when its change feed (`/ui/changes`, server-sent
events) says something happened."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from sdv_events.bus import CommandError
from sdv_events.schemas.devices import DEVICE_ID_PATTERN
from sdv_monitor.adapters.live import Fanout, Filter
from sdv_monitor.audit_queries import audit
from sdv_monitor.dashboard import shapes
from sdv_monitor.dashboard.rendering import Pages
from sdv_monitor.patterns import APP_NAME, NAME, is_app_name
from sdv_monitor.queries import Queries

PAGE = 100
Status = Annotated[str | None, Query(pattern=r"^[a-z_]{0,32}$")]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
ALERT_STATES = r"^(open|acknowledged|resolved|active|all)$"
AppFilter = Annotated[str | None, Query(max_length=128)]  # typed by hand: an odd one matches nothing


def _blank(value: str | None) -> str | None:
    """A form's empty choice is no filter."""
    return value or None


def dashboard_router(queries: Queries, changed: Fanout, pages: Pages) -> APIRouter:
    router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)

    def now() -> datetime:
        return datetime.now(UTC)

    @router.get("/")
    async def overview(request: Request) -> Response:
        status = await queries.status()
        offline = await queries.devices(status="accepted", online=False, limit=10)
        alerts = await queries.alerts(state="active", limit=10)
        versions = await queries.app_versions()
        return pages.render(request, "overview.html", title="Fleet overview", feed="/ui/changes",
                            status=status, offline=offline, alerts=alerts, versions=versions.items)

    @router.get("/devices")
    async def devices(request: Request, status: Status = None,
                      online: Annotated[str | None, Query(pattern=r"^(|true|false)$")] = None,
                      app: AppFilter = None,
                      offset: Offset = 0) -> Response:
        wanted_online = None if not online else online == "true"
        page = await queries.devices(status=_blank(status), online=wanted_online, app=_blank(app),
                                     limit=PAGE, offset=offset)
        return pages.render(request, "devices.html", title="Devices", feed="/ui/changes", page=page,
                            filters={"status": status or "", "online": online or "", "app": app or ""})

    @router.get("/devices/{device_id}")
    async def device(request: Request, device_id: Annotated[str, Path(pattern=DEVICE_ID_PATTERN)],
                     console: Annotated[str | None, Query(pattern=APP_NAME)] = None) -> Response:
        found = await queries.device(device_id)
        if found is None:
            return pages.render(request, "missing.html", http_status=404, title="No such device",
                                what="device", key=device_id, feed="")
        tail = console or next((a.app for a in found.apps if is_app_name(a.app)), None)
        return pages.render(request, "device.html", title=f"Device {device_id}",
                            feed=f"/ui/changes?device={device_id}", detail=found, console=tail,
                            console_apps=[a.app for a in found.apps if is_app_name(a.app)])

    @router.get("/rollouts")
    async def rollouts(request: Request, status: Status = None,
                       app: AppFilter = None,
                       offset: Offset = 0) -> Response:
        page = await queries.rollouts(status=_blank(status), app=_blank(app), limit=PAGE, offset=offset)
        return pages.render(request, "rollouts.html", title="Rollouts", feed="/ui/changes", page=page,
                            filters={"status": status or "", "app": app or ""}, now=now())

    @router.get("/rollouts/{rollout_id}")
    async def rollout(request: Request, rollout_id: Annotated[str, Path(pattern=NAME)]) -> Response:
        found = await queries.rollout(rollout_id)
        if found is None:
            return pages.render(request, "missing.html", http_status=404, title="No such rollout",
                                what="rollout", key=rollout_id, feed="")
        at = now()
        return pages.render(request, "rollout.html", title=f"Rollout {rollout_id}",
                            feed=f"/ui/changes?rollout={rollout_id}", detail=found,
                            waves=shapes.waves_of(found, at), took_s=shapes.rollout_took_s(found.rollout, at),
                            series=shapes.progress_series(found, at))

    @router.get("/alerts")
    async def alerts(request: Request,
                     state: Annotated[str, Query(pattern=ALERT_STATES)] = "active",
                     offset: Offset = 0) -> Response:
        page = await queries.alerts(state=state, limit=PAGE, offset=offset)
        return pages.render(request, "alerts.html", title="Alerts", feed="/ui/changes?alerts=true",
                            page=page, state=state)

    @router.get("/audit")
    async def audit_search(request: Request) -> Response:
        params = dict(request.query_params)
        if not any(params.get(name) for name in shapes.AUDIT_FIELDS):  # a first visit: the last hour
            params["since"] = (now() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
        query, entered, problem = shapes.audit_query(params)
        found = None
        if query is not None:
            try:
                found = await audit(queries.pool, queries.s, query)
            except CommandError as exc:
                problem = exc.message
        return pages.render(request, "audit.html", http_status=422 if problem else 200, title="Audit",
                            feed="", entered=entered, found=found, problem=problem)

    @router.get("/ui/changes")
    async def changes(rollout: Annotated[str | None, Query(pattern=NAME)] = None,
                      device: Annotated[str | None, Query(pattern=DEVICE_ID_PATTERN)] = None,
                      alerts: bool = False) -> EventSourceResponse:
        """Notices for a page (`changed`, with an event's type): something it shows changed in
        the read model (sent once the change is committed). The page fetches its live part
        again; no event body is sent, and nothing is replayed on a reconnect (the page fetches
        again then anyway)."""
        wanted = Filter(rollout=rollout, device=device, alerts=alerts)

        async def notices() -> AsyncIterator[ServerSentEvent]:
            async for event in changed.follow(wanted, None):
                if not isinstance(event, str):
                    yield ServerSentEvent(data=event.type, event="changed")

        return EventSourceResponse(notices(), ping=15)

    return router
