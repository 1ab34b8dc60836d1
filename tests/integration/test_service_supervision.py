"""A service's health tells the truth: a failing task shows in ping with its cause, a stuck relay
turns the service unhealthy, and a task that cannot go on stops the service with an error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import nats
import pytest
from msgspec import Struct

from sdv_events.bus import CommandClient
from sdv_events.provisioning import EVENTS_STREAM, provision
from sdv_events.registry import event
from sdv_events.service import (
    Ping,
    ServiceHealth,
    ServiceRuntime,
    ServiceSettings,
    run_service,
    wait_until_ready,
)
from sdv_events.supervision import ServiceFailed, TaskCannotContinue


@event("suptest.Noted")
class Noted(Struct, frozen=True):
    n: int


def settings(nats_url: str, database_url: str, schema: str, **extra: object) -> ServiceSettings:
    return ServiceSettings(service="suptest", nats_url=nats_url, database_url=database_url,
                           schema_name=schema, **extra)  # type: ignore[arg-type]


async def ping(client: CommandClient) -> ServiceHealth:
    return await client.call("suptest", "ping", Ping(), ServiceHealth)


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_a_failing_task_shows_in_ping_with_its_cause_and_recovers(
    fresh_nats_url: str, database_url: str, schema: str
) -> None:
    runs = 0

    async def flaky(stop: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise ConnectionRefusedError("peer not reachable yet")
        await stop.wait()

    async def on_start(runtime: ServiceRuntime) -> None:
        runtime.spawn(flaky, "flaky")

    stop = asyncio.Event()
    service = asyncio.create_task(run_service("suptest", settings(fresh_nats_url, database_url, schema),
                                              on_start=on_start, stop=stop))
    nc = await nats.connect(fresh_nats_url)
    try:
        await wait_until_ready(nc, "suptest", task=service)
        client = CommandClient(nc, timeout=3)

        async def restarted() -> bool:
            tasks = {t.name: t for t in (await ping(client)).tasks}
            return tasks["flaky"].restarts == 1 and tasks["flaky"].state == "running"

        await until(restarted, 10, "the flaky task to be restarted")
        health = await ping(client)
        tasks = {t.name: t for t in health.tasks}
        assert tasks["flaky"].last_error == "ConnectionRefusedError: peer not reachable yet"
        assert health.healthy, health.problems
        assert tasks["relay"].detail["state"] == "leading"
    finally:
        stop.set()
        await asyncio.wait_for(service, 20)
        await nc.close()


async def test_a_stuck_relay_turns_ping_unhealthy_then_healthy_once_it_publishes(
    fresh_nats_url: str, database_url: str, schema: str
) -> None:
    """The relay task is alive and ping answers — but events are not going out. Health says so."""
    stop = asyncio.Event()
    runtime_box: list[ServiceRuntime] = []

    async def on_start(runtime: ServiceRuntime) -> None:
        runtime_box.append(runtime)

    service = asyncio.create_task(run_service(
        "suptest", settings(fresh_nats_url, database_url, schema, relay_stuck_after_s=1.0),
        on_start=on_start, stop=stop))
    nc = await nats.connect(fresh_nats_url)
    try:
        await wait_until_ready(nc, "suptest", task=service)
        client = CommandClient(nc, timeout=3)
        js = nc.jetstream()
        await js.delete_stream(EVENTS_STREAM)
        await runtime_box[0].store.append("note-1", 0, [Noted(1)])

        async def unhealthy() -> bool:
            return not (await ping(client)).healthy

        await until(unhealthy, 15, "ping to report the stuck relay")
        health = await ping(client)
        [problem] = health.problems
        assert problem.startswith("relay: relay stuck: 1 event(s) unpublished")
        assert "NoStreamResponseError" in problem or "no response from stream" in problem
        relay = next(t for t in health.tasks if t.name == "relay")
        assert relay.state == "running"
        assert relay.detail["behind"] == 1

        await provision(js)  # the stream is back: the relay publishes and health turns green

        async def healthy() -> bool:
            return (await ping(client)).healthy

        await until(healthy, 20, "health to recover once the stream is back")
        info = await js.stream_info(EVENTS_STREAM)
        assert info.state.messages == 1
    finally:
        stop.set()
        await asyncio.wait_for(service, 20)
        await nc.close()


async def test_a_task_that_cannot_continue_stops_the_service_with_an_error(
    fresh_nats_url: str, database_url: str, schema: str
) -> None:
    async def doomed(stop: asyncio.Event) -> None:
        await asyncio.sleep(0.3)
        raise TaskCannotContinue("the read model's schema was dropped")

    async def on_start(runtime: ServiceRuntime) -> None:
        runtime.spawn(doomed, "doomed")

    service = run_service("suptest", settings(fresh_nats_url, database_url, schema), on_start=on_start,
                          stop=asyncio.Event())
    with pytest.raises(ServiceFailed, match="doomed"):
        await asyncio.wait_for(service, 20)
