"""Policies, event → command: a package version landing on a watched channel starts a rollout;
a newly accepted device that a policy's selector picks gets the fleet's current version.

The shared consumer runner (sdv_events.processing) feeds them; rollout ids are derived from
(policy, digest / device), and creating and starting a rollout are idempotent, so a redelivered
event starts nothing twice.

A refusal (a yanked or unknown package, an overlapping rollout) is an outcome: logged, not
retried. Anything else escapes to the runner, which decides (processing/failures.py): a peer or
a connection away (the packager or the registry briefly down) is waited out, retried for as long
as it lasts, so a release or an acceptance is never lost to an outage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import structlog

from sdv_events.bus import CommandClient, Conflict, NotFound, Rejected
from sdv_events.commands import handle_command, load, raise_if_refused
from sdv_events.envelope import Envelope, Metadata
from sdv_events.idempotency import IdempotencyKey
from sdv_events.ids import stream_id
from sdv_events.schemas.devices import DeviceAccepted, DeviceView, GetDevice
from sdv_events.schemas.packages import PackageInfo, PackagePromoted, PackagePublished
from sdv_events.schemas.rollouts import CreateRolloutRequest, RolloutPolicy
from sdv_events.selectors import parse_selector
from sdv_orchestrator.application import Orchestrator
from sdv_orchestrator.domain.policy import (
    DeletePolicy,
    SetPolicy,
    policy_decider,
    rollout_for_new_device,
    rollout_for_release,
)

log = structlog.get_logger("sdv.orchestrator.policies")
SUBJECTS = ["sdv.evt.package.*.PackagePublished", "sdv.evt.package.*.PackagePromoted",
            "sdv.evt.device.*.DeviceAccepted"]
POLICY = "policy"
# What makes a policy's rollout an outcome rather than a failure: the suite said no.
POLICY_REFUSALS = (Rejected, Conflict, NotFound)


@dataclass
class Policies:
    orchestrator: Orchestrator
    commands: CommandClient

    async def set(self, policy: RolloutPolicy, *, metadata: Metadata = Metadata(),
                  key: IdempotencyKey | None = None) -> RolloutPolicy:
        await self._run(policy.name, SetPolicy(policy), metadata, key)
        return policy

    async def delete(self, name: str, *, metadata: Metadata = Metadata()) -> None:
        await self._run(name, DeletePolicy(name), metadata, None)

    async def _run(self, name: str, command: SetPolicy | DeletePolicy, metadata: Metadata,
                   key: IdempotencyKey | None) -> None:
        # The decider's code (invalid_request, not_found) is what the client branches on.
        raise_if_refused(await handle_command(self.orchestrator.store, policy_decider,
                                              stream_id(POLICY, name), command, key=key,
                                              metadata=metadata))

    async def all(self) -> list[RolloutPolicy]:
        found = []
        for sid in await self.orchestrator.store.stream_ids(POLICY):
            state, _ = await load(self.orchestrator.store, policy_decider, sid)
            if state.policy is not None:
                found.append(state.policy)
        return found

    async def on_release(self, name: str, version: str, digest: str, channel: str,
                         cause: Metadata = Metadata()) -> None:
        for policy in await self.all():
            request = rollout_for_release(policy, name, version, digest, channel)
            if request is not None:
                await self._start(policy, request, cause)

    async def on_device_accepted(self, device_id: str, cause: Metadata = Metadata()) -> None:
        for policy in await self.all():
            if not (policy.auto_assign and policy.enabled):
                continue
            if policy.target.selector:
                # The device's own stream (folded by `get`), not the registry's read model,
                # which may not have caught up with an acceptance that just happened. The
                # registry away: this raises, and the runner waits until it answers.
                device = await self.commands.call("registry", "get", GetDevice(device_id), DeviceView)
                if not parse_selector(policy.target.selector).matches(device.labels):
                    continue
            elif device_id not in (policy.target.device_ids or []):
                continue
            current = await self.current_version(policy.app)
            request = None if current is None else rollout_for_new_device(policy, current, device_id)
            if request is not None:
                await self._start(policy, request, cause)

    async def current_version(self, app: str) -> PackageInfo | None:
        """The package of the app's most recently completed rollout: the fleet's version."""
        pool = self.orchestrator.store.pool
        rollout_id = await self.orchestrator.rollouts.last_completed(pool, app)
        return None if rollout_id is None else await self.orchestrator.desired.view.package_of(
            pool, rollout_id)

    async def _start(self, policy: RolloutPolicy, request: CreateRolloutRequest,
                     cause: Metadata) -> None:
        # The policy acts; the event it acts on (`cause`: its id and correlation) caused it.
        meta = msgspec.structs.replace(cause, actor=f"policy:{policy.name}")
        try:
            view = await self.orchestrator.create(request, metadata=meta)
        except POLICY_REFUSALS as err:  # e.g. yanked, or overlapping an active rollout
            log.warning("policy_rollout_refused", policy=policy.name, app=request.package,
                        version=request.version, code=err.code, error=err.message)
            return
        log.info("policy_rollout_started", policy=policy.name, rollout_id=view.rollout_id,
                 app=view.app, version=view.version, status=view.status)


class PolicyEvents:
    """The processor the shared consumer runner feeds: releases and acceptances → rollouts.
    Events from before the orchestrator first ran are not its business (`start = "new"`)."""

    name = "policies"
    filter_subjects = tuple(SUBJECTS)
    start = "new"

    def __init__(self, policies: Policies) -> None:
        self.policies = policies

    async def handle(self, events: Sequence[Envelope]) -> None:
        for event in events:
            await dispatch(self.policies, event.data, cause_of(event))


def cause_of(event: Envelope) -> Metadata:
    """What a policy's command carries of the event that triggered it."""
    return Metadata(correlation_id=event.correlation_id or str(event.event_id),
                    causation_id=str(event.event_id))


async def dispatch(policies: Policies, data: object, cause: Metadata = Metadata()) -> None:
    match data:
        case PackagePublished(package=info):
            await policies.on_release(info.name, info.version, info.digest, info.channel, cause)
        case PackagePromoted(name=name, version=version, digest=digest, to_channel=channel):
            await policies.on_release(name, version, digest, channel, cause)
        case DeviceAccepted(device_id=device_id):
            await policies.on_device_accepted(device_id, cause)
