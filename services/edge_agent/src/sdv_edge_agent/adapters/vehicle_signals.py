"""Live values of the VSS signals that activation gates name, from a subscription to the vehicle's
KUKSA databroker (kuksa-client `subscribe_current_values`: the databroker pushes each change; the
agent never polls).

One subscription per agent covers every gated app's signals; it is re-opened when the set of
signals changes (the values of signals kept in it stay: they are still current), and closed
when no gate waits any more. While the
databroker is unreachable the values are *unknown* (not the last ones seen): a gate never opens
on stale data — a car that was parked when the link dropped may be moving now — and the verdict
says the databroker does not answer. `wait_until` returns as soon as the gates hold, or with the
verdict that held them back when its deadline passes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import structlog

from sdv_edge_agent.adapters.cancel import reraise_if_cancelling
from sdv_events.gates import Gate, Verdict, judge

log = structlog.get_logger("sdv.agent.signals")
RETRY_S = (0.2, 0.5, 1.0, 2.0, 5.0)


class SignalWatch:
    def __init__(self, address: Callable[[], tuple[str, int]]) -> None:
        self._address = address
        self._wanted: dict[str, int] = {}  # signal → how many waiters name it
        self._subscribed: frozenset[str] = frozenset()
        self.values: dict[str, Any] = {}
        self.connected = False
        self.last_error: str | None = None
        self._changed = asyncio.Condition()
        self._resubscribe = asyncio.Event()

    async def run(self) -> None:
        """The subscription loop (supervised by the agent): reconnects with backoff."""
        failures = 0
        while True:
            if not self._wanted:  # nothing to watch: no subscription, no values
                if self.connected:
                    log.info("signal_subscription_closed", reason="no gate waits")
                await self._forget()
                self.last_error, failures = None, 0
                if not self._wanted:  # (no await since the check: no wake-up can be lost)
                    self._resubscribe.clear()
                    await self._resubscribe.wait()
                continue
            try:
                await self._subscribe(sorted(self._wanted))
                failures = 0
                await self._keep_only(set(self._wanted))  # renewed: the values it keeps are current
                continue
            except Exception as exc:
                reraise_if_cancelling(exc)
                failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "signal_subscription_failed",
                    error=self.last_error,
                    signals=sorted(self._wanted),
                    attempt=failures,
                )
            await self._forget()
            if failures:  # back off, unless the signals change meanwhile
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._resubscribe.wait(), RETRY_S[min(failures, len(RETRY_S)) - 1])

    async def _subscribe(self, signals: list[str]) -> None:
        from kuksa_client.grpc.aio import VSSClient  # grpc is heavy: load it when gates exist

        host, port = self._address()
        self._resubscribe.clear()
        self._subscribed = frozenset(signals)
        async with VSSClient(host, port, ensure_startup_connection=False) as client:
            updates = client.subscribe_current_values(signals)
            next_update = asyncio.ensure_future(anext(updates))
            changed = asyncio.ensure_future(self._resubscribe.wait())
            try:
                while True:
                    done, _ = await asyncio.wait({next_update, changed}, return_when=asyncio.FIRST_COMPLETED)
                    if changed in done:
                        log.info("signal_subscription_renewed", signals=sorted(self._wanted))
                        return
                    batch = next_update.result()
                    if not self.connected:
                        self.connected, self.last_error = True, None
                        log.info("signal_subscription_open", address=f"{host}:{port}", signals=signals)
                    async with self._changed:
                        for path, datapoint in batch.items():
                            self.values[path] = None if datapoint is None else datapoint.value
                        self._changed.notify_all()
                    next_update = asyncio.ensure_future(anext(updates))
            finally:
                for task in (next_update, changed):
                    task.cancel()

    async def _forget(self) -> None:
        self.connected, self._subscribed = False, frozenset()
        async with self._changed:
            self.values.clear()
            self._changed.notify_all()

    async def _keep_only(self, signals: set[str]) -> None:
        async with self._changed:
            for signal in set(self.values) - signals:
                del self.values[signal]
            self._changed.notify_all()

    def _want(self, signals: Sequence[str], delta: int) -> None:
        """Count who waits on what; re-open the subscription only when a signal is missing
        from it (one no longer wanted stays subscribed until the next reconnect: harmless), and
        close it once nobody waits."""
        for signal in signals:
            self._wanted[signal] = self._wanted.get(signal, 0) + delta
            if self._wanted[signal] <= 0:
                del self._wanted[signal]
        if not set(self._wanted) <= self._subscribed or not self._wanted:
            self._resubscribe.set()

    def judge(self, gates: Sequence[Gate]) -> Verdict:
        verdict = judge(gates, self.values)
        if verdict.holds or verdict.value is not None or self.connected or self.last_error is None:
            return verdict
        # No value because the subscription failed (not merely not yet answered): say so, in
        # words that stay the same from one retry to the next (the error is in the log).
        return msgspec.structs.replace(
            verdict, reason=f"waiting for {verdict.gate}: the vehicle databroker does not answer, "
                            f"so {verdict.signal} has no value")

    async def wait_until(
        self,
        gates: Sequence[Gate],
        timeout_s: float | None = None,
        on_deferred: Callable[[Verdict], None] | None = None,
    ) -> Verdict:
        """Wait for every gate to hold; `on_deferred` is told each time the reason changes."""
        signals = [g.signal for g in gates]
        self._want(signals, +1)
        last_reason = None
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                while not (verdict := self.judge(gates)).holds:
                    if on_deferred is not None and verdict.reason != last_reason:
                        on_deferred(verdict)
                    last_reason = verdict.reason
                    await self._changed.wait()
                return verdict
        except TimeoutError:
            return self.judge(gates)
        finally:
            self._want(signals, -1)
