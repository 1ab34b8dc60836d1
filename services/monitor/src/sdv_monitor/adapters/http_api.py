"""The monitor's read-only HTTP API (FastAPI on uvicorn): the read models as JSON, health and
readiness, OpenAPI at `/openapi.json`. Parameters are validated (bad ones get 422 with the
reason, unknown ids 404), and a database that does not answer is 503, never a stack trace."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import asyncpg
import msgspec
import structlog
import uvicorn
from fastapi import FastAPI, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sse_starlette import EventSourceResponse, ServerSentEvent

from sdv_events.asyncapi import shipped_document
from sdv_events.bus import CommandError
from sdv_events.registry import short_name
from sdv_events.schemas.devices import DEVICE_ID_PATTERN
from sdv_events.schemas.monitor import (
    AlertPage,
    AppVersions,
    AuditPage,
    AuditQuery,
    DeviceDetail,
    DevicePage,
    FleetStatus,
    PackagePage,
    RolloutDetail,
    RolloutPage,
)
from sdv_monitor.adapters.console_tail import ConsoleTail
from sdv_monitor.adapters.live import Fanout, Filter, LiveFeed
from sdv_monitor.adapters.metrics import Metrics
from sdv_monitor.adapters.openapi import install, json_response
from sdv_monitor.audit_queries import audit
from sdv_monitor.dashboard.pages import dashboard_router
from sdv_monitor.dashboard.rendering import STATIC_DIR, Pages
from sdv_monitor.patterns import APP_NAME, NAME
from sdv_monitor.queries import Queries

log = structlog.get_logger("sdv.monitor.http")
STATES = r"^(open|acknowledged|resolved|active|all)$"
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
Readiness = Callable[[], Awaitable[list[str]]]


def _json(view: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(view), status_code=status, media_type="application/json")


def _missing(what: str, key: str) -> Response:
    return JSONResponse({"error": "not_found", "message": f"no {what} {key!r}"}, status_code=404)


def create_app(queries: Queries, readiness: Readiness, live: LiveFeed, metrics: Metrics,
               console: ConsoleTail, *, changed: Fanout | None = None, version: str = "0") -> FastAPI:
    """`live`: the bus's events (`/api/stream`); `changed`: the read model's change notices
    for the dashboard's pages (`/ui/changes`; none heard when not given)."""
    app = FastAPI(title="SDV Fleet monitor", version=version, docs_url="/docs", redoc_url=None,
                  description="Read-only views of the fleet, its software and its rollouts.")
    pages = Pages(version)

    @app.exception_handler(asyncpg.PostgresError)
    @app.exception_handler(OSError)
    async def unavailable(request: Request, exc: Exception) -> Response:
        log.warning("http_read_failed", path=request.url.path, error=repr(exc)[:300])
        if not request.url.path.startswith(("/api/", "/metrics")):
            return pages.render(request, "unavailable.html", http_status=503, title="Unavailable", feed="")
        return JSONResponse({"error": "unavailable", "message": "the read models cannot be read now"},
                            status_code=503)

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/readyz")
    async def readyz() -> Response:
        problems = await readiness()
        return JSONResponse({"ready": not problems, "problems": problems},
                            status_code=503 if problems else 200)

    bus_contract = shipped_document()

    @app.get("/asyncapi.json", include_in_schema=False)
    async def asyncapi() -> Response:
        """The bus contract (docs/asyncapi.json): every command, event, KV key and log subject."""
        return Response(bus_contract, media_type="application/json")

    @app.get("/api/status", responses=json_response(FleetStatus))
    async def status() -> Response:
        return _json(await queries.status())

    @app.get("/api/devices", responses=json_response(DevicePage))
    async def devices(status: Annotated[str | None, Query(pattern=r"^[a-z_]{1,32}$")] = None,
                      online: bool | None = None,
                      app_name: Annotated[str | None, Query(alias="app", pattern=NAME)] = None,
                      limit: Limit = 100, offset: Offset = 0) -> Response:
        return _json(await queries.devices(status=status, online=online, app=app_name, limit=limit,
                                           offset=offset))

    @app.get("/api/apps", responses=json_response(AppVersions))
    async def app_versions() -> Response:
        """Per app and version: devices it is installed, running, desired and failed on."""
        return _json(await queries.app_versions())

    @app.get("/api/devices/{device_id}", responses=json_response(DeviceDetail))
    async def device(device_id: Annotated[str, Path(pattern=DEVICE_ID_PATTERN)],
                     history_limit: Limit = 50) -> Response:
        found = await queries.device(device_id, history_limit=history_limit)
        return _missing("device", device_id) if found is None else _json(found)

    @app.get("/api/rollouts", responses=json_response(RolloutPage))
    async def rollouts(app_name: Annotated[str | None, Query(alias="app", pattern=NAME)] = None,
                       status: Annotated[str | None, Query(pattern=r"^[a-z_]{1,32}$")] = None,
                       limit: Limit = 100, offset: Offset = 0) -> Response:
        return _json(await queries.rollouts(app=app_name, status=status, limit=limit, offset=offset))

    @app.get("/api/rollouts/{rollout_id}", responses=json_response(RolloutDetail))
    async def rollout(rollout_id: Annotated[str, Path(pattern=NAME)], limit: Limit = 1000,
                      offset: Offset = 0) -> Response:
        found = await queries.rollout(rollout_id, limit=limit, offset=offset)
        return _missing("rollout", rollout_id) if found is None else _json(found)

    @app.get("/api/packages", responses=json_response(PackagePage))
    async def packages(name: Annotated[str | None, Query(pattern=NAME)] = None,
                       channel: Annotated[str | None, Query(pattern=r"^(dev|beta|stable)$")] = None,
                       include_yanked: bool = True, limit: Limit = 100, offset: Offset = 0) -> Response:
        return _json(await queries.packages(name=name, channel=channel, include_yanked=include_yanked,
                                            limit=limit, offset=offset))

    @app.get("/api/alerts", responses=json_response(AlertPage))
    async def alerts(state: Annotated[str, Query(pattern=STATES)] = "active",
                     kind: Annotated[str | None, Query(pattern=r"^[a-z_]{1,32}$")] = None,
                     device: Annotated[str | None, Query(pattern=DEVICE_ID_PATTERN)] = None,
                     limit: Limit = 100, offset: Offset = 0) -> Response:
        return _json(await queries.alerts(state=state, kind=kind, device=device, limit=limit,
                                          offset=offset))

    @app.get("/api/audit", responses=json_response(AuditPage))
    async def audit_events(request: Request) -> Response:
        """Every event of every service and device fact, oldest first. Query parameters are the
        fields of `AuditQuery` (rollout, device, package, stream, correlation, actor, type,
        since, until, after, limit)."""
        allowed = set(AuditQuery.__struct_fields__)
        params = dict(request.query_params)
        if unknown := sorted(set(params) - allowed):
            return JSONResponse({"error": "invalid_request", "message": f"unknown parameter(s): {unknown}"},
                                status_code=422)
        try:
            query = msgspec.convert(params, AuditQuery, strict=False)
            return _json(await audit(queries.pool, queries.s, query))
        except msgspec.ValidationError as exc:
            return JSONResponse({"error": "invalid_request", "message": str(exc)}, status_code=422)
        except CommandError as exc:
            return JSONResponse({"error": exc.code, "message": exc.message}, status_code=422)

    @app.get("/api/stream")
    async def stream(request: Request, rollout: Annotated[str | None, Query(pattern=NAME)] = None,
                     device: Annotated[str | None, Query(pattern=DEVICE_ID_PATTERN)] = None,
                     alerts: bool = False,
                     last_event_id: Annotated[int | None, Header(ge=0)] = None) -> EventSourceResponse:
        """Server-sent events: the bus's events as they happen (a rollout's, a device's, or
        alerts only). Reconnect with `Last-Event-ID` to get what was missed."""
        wanted = Filter(rollout=rollout, device=device, alerts=alerts)

        async def events() -> AsyncIterator[ServerSentEvent]:
            async for event in live.follow(wanted, last_event_id):
                if isinstance(event, str):
                    yield ServerSentEvent(data="{}", event=event)
                else:
                    yield ServerSentEvent(data=event.json.decode(), event=short_name(event.type),
                                          id=str(event.seq))

        return EventSourceResponse(events(), ping=15)

    @app.get("/api/devices/{device_id}/apps/{app_name}/console")
    async def console_tail(device_id: Annotated[str, Path(pattern=DEVICE_ID_PATTERN)],
                           app_name: Annotated[str, Path(pattern=APP_NAME)],
                           last_event_id: Annotated[int | None, Header(ge=0)] = None) -> EventSourceResponse:
        """Server-sent events `line` (`{"stream", "ts", "line"}`): one app's console output, the
        recent lines first, then live. Reconnect with `Last-Event-ID` to go on where it stopped."""
        async def lines() -> AsyncIterator[ServerSentEvent]:
            try:
                async for line in console.follow(device_id, app_name, last_event_id):
                    doc = {"stream": line.stream, "ts": line.ts, "line": line.line}
                    yield ServerSentEvent(data=msgspec.json.encode(doc).decode(), event="line",
                                          id=str(line.seq))
            except Exception as exc:  # the bus is away: the client hears it, and retries
                log.warning("console_tail_failed", device_id=device_id, app=app_name, error=repr(exc)[:300])
                yield ServerSentEvent(data='{"message": "the console cannot be read now"}',
                                      event="unavailable")

        return EventSourceResponse(lines(), ping=15)

    @app.get("/metrics")
    async def prometheus() -> Response:
        body, content_type = await metrics.render()
        return Response(body, media_type=content_type)

    app.include_router(dashboard_router(queries, changed or Fanout(buffer=1), pages))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    install(app, [AlertPage, AppVersions, AuditPage, FleetStatus, DevicePage, DeviceDetail, RolloutPage,
                  RolloutDetail, PackagePage])
    return app


def listen(host: str, port: int) -> socket.socket:
    """Bound here, not by uvicorn (which exits the process when it cannot bind): a port in use
    is an OSError the supervisor logs and retries.

    With TCP_NODELAY, which the connections it accepts inherit: asyncio sets it only on sockets
    whose protocol is IPPROTO_TCP, and `create_server` makes them with protocol 0. Without it,
    uvicorn's separate writes of a response's head and body met the client's delayed ACK (Nagle):
    every request took 40 ms more, `/healthz` included (bench/monitor.py)."""
    sock = socket.create_server((host, port), reuse_port=False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


async def serve_http(app: FastAPI, host: str, port: int, stop: asyncio.Event) -> None:
    """Run uvicorn until `stop`."""
    sock = listen(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    # The service owns SIGTERM/SIGINT (run_service): uvicorn must not capture them.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    stopping = asyncio.create_task(stop.wait())
    log.info("http_api_listening", url=f"http://{host}:{sock.getsockname()[1]}")
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            serving.result()
    finally:
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
        stopping.cancel()
