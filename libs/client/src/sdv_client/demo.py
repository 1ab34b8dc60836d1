"""`sdv demo`: a safe rollout and a failed one, on the local fleet of a running suite.

1. publish `hello-fleet` (demo_app.py) — the packager validates, builds and signs it;
2. roll it out as a canary to the local devices (`fleet=local`): 1 device, then 50 %, then
   100 %, each wave only once the one before succeeded — and show the devices' console lines
   as they arrive (the agents ship app output to `sdv.logs.<device>.<app>.stdout`);
3. publish a version that crashes at start, on purpose;
4. roll it out the same way: the canary fails, the failure rate is over the threshold, the
   rollout aborts and rolls the canary back to the version before.

Each step says what it does and where to look in the dashboard. What counts is checked on the
devices themselves, from the state each agent reports (KV `sdv_reported`): `upgraded` devices
run the good version, healthy, after step 2; `rolled_back` devices the broken version touched
run the good version again after step 4. `ok` only when every device was upgraded and at least
one was rolled back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from rich.console import Console

from sdv_client.demo_app import APP, write_app
from sdv_client.local_agents import SELECTOR
from sdv_client.packages import PackagerClient
from sdv_events.auth.roles import jetstream_prefix_of_file
from sdv_events.bus import CommandClient, CommandError
from sdv_events.provisioning import REPORTED_BUCKET
from sdv_events.schemas.deployment import ReportedState
from sdv_events.schemas.devices import DeviceList, ListDevices
from sdv_events.schemas.packages import PackageInfo
from sdv_events.schemas.rollouts import (
    CreateRolloutRequest,
    RolloutRef,
    RolloutView,
    Strategy,
    Target,
    Thresholds,
    Timeouts,
)

WAVES = ["1", "50%", "100%"]
DEVICE_TIMEOUT_S = 90.0
ROLLOUT_TIMEOUT_S = 240.0
SETTLE_TIMEOUT_S = 60.0
TERMINAL = {"completed", "aborted", "cancelled", "rolled_back"}


class DemoFailed(Exception):
    """A step could not be done; the message says which and why."""


@dataclass
class DemoResult:
    ok: bool
    devices: int = 0
    upgraded: int = 0
    rolled_back: int = 0
    app: str = APP
    version: str = ""
    broken_version: str = ""
    rollouts: dict[str, str] = field(default_factory=dict)  # "upgrade" | "broken" → rollout id
    statuses: dict[str, str] = field(default_factory=dict)  # the same keys → how each ended
    console_lines: int = 0
    took_s: float = 0.0
    dashboard_url: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Narrator:
    """What the demo says, on a rich console (stderr under --json: stdout keeps the JSON)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.step_no = 0

    def step(self, text: str) -> None:
        self.step_no += 1
        self.console.print(f"\n[bold cyan]{self.step_no}.[/] [bold]{text}[/]")

    def say(self, text: str) -> None:
        self.console.print(f"   {text}", highlight=False)

    def look(self, text: str) -> None:
        self.console.print(f"   [magenta]dashboard:[/] {text}", highlight=False)

    def ok(self, text: str) -> None:
        self.console.print(f"   [green]✓[/] {text}", highlight=False)

    def bad(self, text: str) -> None:
        self.console.print(f"   [red]✗[/] {text}", highlight=False)

    def line(self, device: str, stream: str, text: str) -> None:
        colour = "yellow" if stream == "stderr" else "dim"
        self.console.print(f"   [{colour}]{device} │[/] {text}", highlight=False)


class Demo:
    def __init__(self, nc: NatsClient, narrator: Narrator, dashboard_url: str | None,
                 selector: str = SELECTOR, js_prefix: str | None = None) -> None:
        self.nc = nc
        self.say = narrator
        self.dashboard_url = dashboard_url
        self.selector = selector
        self.commands = CommandClient(nc, actor="sdv-demo", timeout=30.0)
        self.packages = PackagerClient(nc, actor="sdv-demo", js_prefix=js_prefix)
        self.lines = 0
        self.result = DemoResult(ok=False, dashboard_url=dashboard_url)

    async def run(self) -> DemoResult:
        began = time.monotonic()
        sub = await self.nc.subscribe(f"sdv.logs.*.{APP}.*", cb=self._on_line)
        try:
            await self._run()
        except (DemoFailed, CommandError, nats.errors.Error, TimeoutError) as exc:
            self.result.error = str(exc) or type(exc).__name__
            self.say.bad(f"the demo stopped: {self.result.error}")
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            self.result.console_lines = self.lines
            self.result.took_s = round(time.monotonic() - began, 1)
        r = self.result
        r.ok = (r.error is None and r.devices > 0 and r.upgraded == r.devices and r.rolled_back >= 1)
        return r

    async def _run(self) -> None:
        devices = await self._devices()
        self.result.devices = len(devices)
        good, broken = await self._versions()
        self.result.version, self.result.broken_version = good, broken
        where = f" ({self.dashboard_url})" if self.dashboard_url else ""
        self.say.console.print(f"[bold]sdv demo[/]: {len(devices)} local device(s) ({', '.join(devices[:6])}"
                               f"{' …' if len(devices) > 6 else ''}), selector {self.selector}{where}",
                               highlight=False)

        with tempfile.TemporaryDirectory(prefix="sdv-demo-") as tmp:
            self.say.step(f"Publishing {APP} {good}: the packager validates, builds and signs it")
            package = await self._publish(Path(tmp), good)
            self.say.look("Packages lists it, with its signing key")

            self.say.step(f"Rolling {good} out as a canary: 1 device, then 50 %, then 100 % of "
                          f"{self.selector}")
            view = await self._roll_out(package.version)
            self.result.rollouts["upgrade"] = view.rollout_id
            self.result.statuses["upgrade"] = view.status
            if view.status != "completed":
                raise DemoFailed(f"the rollout of {good} ended {view.status}: {view.reason}")
            running = await self._settled(devices, good, lambda n: n == len(devices))
            self.result.upgraded = len(running)
            self.say.ok(f"completed: {len(running)} of {len(devices)} devices run {APP} {good}")

            self.say.step(f"Publishing {APP} {broken}: it crashes at start, on purpose")
            await self._publish(Path(tmp), broken)

            self.say.step(f"Rolling {broken} out the same way: the canary fails, the rollout aborts "
                          "and rolls back")
            view = await self._roll_out(broken)
            self.result.rollouts["broken"] = view.rollout_id
            self.result.statuses["broken"] = view.status
            touched = sorted(d.device_id for d in view.devices)
            if view.status != "rolled_back":
                raise DemoFailed(f"the rollout of {broken} ended {view.status}, not rolled back: "
                                 f"{view.reason}")
            self.say.ok(f"aborted and rolled back: {view.reason}")
            back = await self._settled(touched, good, lambda n: n == len(touched))
            self.result.rolled_back = len(back)
            untouched = len(devices) - len(touched)
            self.say.ok(f"{', '.join(back)} run{'s' if len(back) == 1 else ''} {good} again; "
                        f"{untouched} device(s) never got {broken}")
            self.say.look(f"Rollouts: {view.rollout_id} is rolled_back, with the reason; the device "
                          "pages show the failed start and the console")

    # --- steps ---------------------------------------------------------------------------------

    async def _devices(self) -> list[str]:
        found = await self.commands.call("registry", "list", ListDevices(
            selector=self.selector, status="accepted", online=True, limit=10_000), DeviceList)
        devices = sorted(d.device_id for d in found.devices)
        if not devices:
            raise DemoFailed(f"no device matching {self.selector} is online: start the suite with its "
                             "local agents (`sdv up`, or `sdv demo --agents 3` to start one)")
        return devices

    async def _versions(self) -> tuple[str, str]:
        """The next free minor: 1.N.0 to upgrade to, 1.N+1.0-broken to fail (a demo may run again)."""
        minors = [-1]
        for view in await self.packages.list(APP):
            with contextlib.suppress(ValueError, IndexError):
                minors.append(int(view.info.version.split(".")[1]))
        n = max(minors) + 1
        return f"1.{n}.0", f"1.{n + 1}.0-broken"

    async def _publish(self, tmp: Path, version: str) -> PackageInfo:
        package = await self.packages.publish_dir(write_app(tmp, version))
        self.say.ok(f"published {package.name} {package.version}: {package.size} bytes, digest "
                    f"{package.digest[:12]}…, signed by packager key {package.key_id}")
        return package

    async def _roll_out(self, version: str) -> RolloutView:
        request = CreateRolloutRequest(
            package=APP, version=version, target=Target(selector=self.selector),
            strategy=Strategy(kind="canary", waves=WAVES), thresholds=Thresholds(success=1.0, error=0.0),
            timeouts=Timeouts(device_s=DEVICE_TIMEOUT_S))
        view = await self.commands.call("orchestrator", "create", request, RolloutView)
        self.say.say(f"rollout {view.rollout_id}: waves of {', '.join(str(w.size) for w in view.waves)} "
                     f"device(s)")
        self.say.look(f"Rollouts → {view.rollout_id}: its devices change colour as each wave goes")
        return await self._watch(view)

    async def _watch(self, view: RolloutView) -> RolloutView:
        seen: dict[str, str] = {}
        wave_states: dict[int, str] = {}
        deadline = time.monotonic() + ROLLOUT_TIMEOUT_S
        while True:
            for wave in view.waves:
                if wave.state != wave_states.get(wave.index) and wave.state in ("running", "completed",
                                                                                  "aborted"):
                    wave_states[wave.index] = wave.state
                    self.say.say(f"wave {wave.index + 1}/{len(view.waves)} {wave.state} "
                                 f"({wave.succeeded} succeeded, {wave.failed} failed of {wave.size})")
            for device in view.devices:
                if seen.get(device.device_id) != device.status:
                    seen[device.device_id] = device.status
                    mark = {"succeeded": "[green]✓[/]", "already_current": "[green]✓[/]",
                            "failed": "[red]✗[/]", "timed_out": "[red]⏱[/]",
                            "rolled_back": "[yellow]↩[/]"}.get(device.status, "→")
                    self.say.console.print(f"   {mark} {device.device_id}: {device.status}", highlight=False)
            if view.status in TERMINAL:
                return view
            if time.monotonic() > deadline:
                raise DemoFailed(f"rollout {view.rollout_id} still {view.status} after "
                                 f"{ROLLOUT_TIMEOUT_S:.0f}s")
            await asyncio.sleep(0.5)
            view = await self.commands.call("orchestrator", "get", RolloutRef(view.rollout_id), RolloutView)

    async def _settled(self, devices: list[str], version: str, enough: Callable[[int], bool]) -> list[str]:
        """The devices that report `version` RUNNING and healthy, once `enough` of them do (or
        the time is up)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            running = [d for d in devices if await self._runs(d, version)]
            if enough(len(running)) or time.monotonic() > deadline:
                return running
            await asyncio.sleep(0.5)

    async def _runs(self, device: str, version: str) -> bool:
        try:
            raw = await self.packages.js.get_last_msg(f"KV_{REPORTED_BUCKET}",
                                                      f"$KV.{REPORTED_BUCKET}.{device}", direct=True)
        except nats.js.errors.NotFoundError:
            return False
        if not raw.data:
            return False
        state = msgspec.json.decode(raw.data, type=ReportedState)
        app = state.apps.get(APP)
        return app is not None and app.state == "RUNNING" and bool(app.healthy) and app.version == version

    async def _on_line(self, msg: Msg) -> None:
        _, _, device, _, stream = msg.subject.split(".", 4)
        for text in msg.data.decode(errors="replace").splitlines():
            self.lines += 1
            self.say.line(device, stream, text)


async def run_demo(nc: NatsClient, console: Console, dashboard_url: str | None,
                   creds: str | None = None) -> DemoResult:
    """`creds`: the `.creds` file `nc` connected with (an operator's reach JetStream under a
    prefix: `sdv_events.auth.roles.jetstream_prefix`)."""
    return await Demo(nc, Narrator(console), dashboard_url,
                      js_prefix=jetstream_prefix_of_file(creds)).run()
