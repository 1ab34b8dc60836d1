"""`sdv.cmd.monitor.*`: read queries over the monitor's views (the CLI's `devices get`,
`status`), a few lines each."""

from __future__ import annotations

from faststream.nats import NatsRouter

from sdv_events.bus import RequestInfo, register_command
from sdv_events.bus.rpc import NotFound
from sdv_events.schemas.monitor import (
    AcknowledgeAlert,
    AlertPage,
    AlertView,
    AuditPage,
    AuditQuery,
    DeviceDetail,
    DevicePage,
    FleetStatus,
    GetDeviceInventory,
    GetFleetStatus,
    ListAlerts,
    ListFleet,
)
from sdv_monitor.adapters.alert_watch import AlertWatch
from sdv_monitor.audit_queries import audit
from sdv_monitor.queries import Queries
from sdv_monitor.settings import SERVICE


def command_router(queries: Queries, alerts: AlertWatch) -> NatsRouter:
    router = NatsRouter()

    async def device(req: GetDeviceInventory, _: RequestInfo) -> DeviceDetail:
        found = await queries.device(req.device_id, history_limit=req.history_limit)
        if found is None:
            raise NotFound(f"the monitor knows no device {req.device_id!r}")
        return found

    async def fleet(req: ListFleet, _: RequestInfo) -> DevicePage:
        return await queries.devices(status=req.status, online=req.online, app=req.app,
                                     limit=req.limit, offset=req.offset)

    async def status(_: GetFleetStatus, __: RequestInfo) -> FleetStatus:
        return await queries.status()

    async def audit_(req: AuditQuery, _: RequestInfo) -> AuditPage:
        return await audit(queries.pool, queries.s, req)

    async def list_alerts(req: ListAlerts, _: RequestInfo) -> AlertPage:
        return await queries.alerts(state=req.state, kind=req.kind, device=req.device, limit=req.limit,
                                    offset=req.offset)

    async def ack(req: AcknowledgeAlert, info: RequestInfo) -> AlertView:
        return await alerts.acknowledge(req.alert_id, req.note, info.metadata())

    register_command(router, SERVICE, "device", GetDeviceInventory, device)
    register_command(router, SERVICE, "fleet", ListFleet, fleet)
    register_command(router, SERVICE, "status", GetFleetStatus, status)
    register_command(router, SERVICE, "audit", AuditQuery, audit_)
    register_command(router, SERVICE, "alerts", ListAlerts, list_alerts)
    register_command(router, SERVICE, "ack_alert", AcknowledgeAlert, ack)
    return router
