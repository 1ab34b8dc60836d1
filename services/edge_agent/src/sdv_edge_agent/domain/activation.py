"""Download now, activate later: when a desired version must wait before the app switches to it.

A desired entry with an `activation` (gates on live vehicle signals, a hold, or both) is first
*staged*: downloaded, verified and installed beside the active version, which keeps running as
it is. The switch itself (the ordinary install or upgrade, `domain/reconcile.py`) happens only once
the activation is *released*: every gate held (the supervisor learns it from its databroker
subscription and remembers the `ActivationKey` it held for), or a newer document dropped the hold.
Until then the step is `AwaitActivation`, and the agent reports why with `ActivationDeferred`.

A release counts for one key only — the staged digest with those gates and that hold — so a newer
document that changes any of them waits again, on its own terms, and the staged files are reused
when the digest is the same. Pure: what is staged and what was released come in as values.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdv_events.gates import Gate, Literal_, Verdict, parse_gates
from sdv_events.schemas.deployment import DesiredApp
from sdv_events.schemas.packages import PackageInfo

HELD = "held until activated"


@dataclass(frozen=True)
class ActivationKey:
    """What one wait is for: a release of these gates (or of this hold) for this digest."""

    digest: str
    gates: tuple[str, ...]
    hold: bool


@dataclass(frozen=True)
class Stage:
    """Download, verify and install `package` beside the active version; switch to nothing."""

    package: PackageInfo


@dataclass(frozen=True)
class Unstage:
    """A staged version no document asks for any more: its files go, the active one stays."""


@dataclass(frozen=True)
class AwaitActivation:
    """The staged version waits for its gates (judged on every signal update) or its hold."""

    package: PackageInfo
    key: ActivationKey
    gates: tuple[Gate, ...]

    @property
    def held(self) -> bool:
        return self.key.hold


def activation_key(desired: DesiredApp) -> ActivationKey | None:
    """None: the entry switches at once (no activation, or one with neither gates nor hold)."""
    activation = desired.activation
    if activation is None or not (activation.gates or activation.hold):
        return None
    return ActivationKey(desired.package.digest, tuple(activation.gates), activation.hold)


def activation_step(desired: DesiredApp, staged: str | None,
                    released: ActivationKey | None) -> Stage | AwaitActivation | None:
    """What a version that differs from the active one needs before the switch (None: switch
    now). `staged`: the digest staged here; `released`: the key whose gates were seen holding.
    The gates were parsed at admission (domain/admission.py), so they parse here."""
    key = activation_key(desired)
    if key is None or key == released:
        return None
    if staged != desired.package.digest:
        return Stage(desired.package)
    return AwaitActivation(desired.package, key, tuple(parse_gates(key.gates)))


def stale_stage(desired: DesiredApp | None, staged: str | None) -> bool:
    """A staged version that the desired entry no longer names (another version, the running
    one again, or no entry): superseded."""
    return staged is not None and (desired is None or desired.package.digest != staged)


@dataclass(frozen=True)
class Deferral:
    """Why the switch waits: the fields of an `agent.ActivationDeferred` fact."""

    reason: str
    gate: str | None = None
    signal: str | None = None
    value: Literal_ | None = None
    held: bool = False


def deferral(step: AwaitActivation, verdict: Verdict | None = None) -> Deferral:
    """The deferral of a held version, or of one whose gates gave `verdict` (not holding)."""
    if step.held or verdict is None:
        return Deferral(HELD, held=True)
    return Deferral(verdict.reason, gate=verdict.gate, signal=verdict.signal, value=verdict.value)


def deferral_mark(rollout_id: str | None, revision: int, reason: str) -> str:
    """What the agent keeps of the deferral it reported last: the same reason for the same
    desired entry is not reported again (not per signal update, not after an agent restart),
    while a new entry — another rollout or revision of it — hears it once."""
    return f"{rollout_id or ''}|{revision}|{reason}"
