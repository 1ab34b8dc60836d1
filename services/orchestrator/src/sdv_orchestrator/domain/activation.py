"""`sdv rollout activate`: an operator releases the hold of a rollout created with `hold` (download
now, activate later), for named devices or every device targeted so far. Devices targeted later
(the next waves) come with the hold again: each release is an operator's decision about the
devices it names. Gates stay: a released device still switches only when they hold (a hold
is a matter of timing, a gate one of the vehicle's safety).

Refused, with a typed error, for a rollout that holds nothing (`conflict`), is not running
(`conflict`), a device that is not in the rollout (`invalid_request`) or not targeted yet
(`conflict`). Releasing devices already released, or already done, does nothing. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

import msgspec

from sdv_events.errors import DomainError
from sdv_events.schemas.rollouts import RolloutCreated
from sdv_events.schemas.scheduling import MAX_ACTIVATE, ActivationRequested


class ActivateDevices(msgspec.Struct, frozen=True, kw_only=True):
    device_ids: list[str] = []  # none: every device targeted so far
    now: datetime
    actor: str = ""


def _shown(ids: list[str]) -> str:
    return ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


def decide_activation(cmd: ActivateDevices, *, status: str, created: RolloutCreated,
                      devices: Mapping[str, tuple[int, str, datetime | None]],
                      planned_wave: Callable[[str], int | None], activated: set[str],
                      waiting: frozenset[str]) -> list[ActivationRequested]:
    """`devices`: the targeted devices (wave, status, deadline); `waiting`: the statuses of a
    device without an outcome; `planned_wave`: the wave a device is planned in, if any."""
    rollout = created.rollout_id
    if not created.schedule.hold:
        raise DomainError(f"rollout {rollout} holds no device (it was created without --hold): "
                          "its devices switch as soon as their gates hold", code="conflict")
    if status not in ("running", "paused"):
        raise DomainError(f"rollout {rollout} is {status}: there is nothing to activate",
                          code="conflict")
    named = list(dict.fromkeys(cmd.device_ids))
    if len(named) > MAX_ACTIVATE:
        raise DomainError(f"at most {MAX_ACTIVATE} devices per activate (name none for all)",
                          code="invalid_request")
    strangers = [d for d in named if d not in devices and planned_wave(d) is None]
    if strangers:
        raise DomainError(f"not in rollout {rollout}: {_shown(strangers)}", code="invalid_request")
    later = [d for d in named if d not in devices]
    if later:
        waves = sorted({w + 1 for d in later if (w := planned_wave(d)) is not None})
        raise DomainError(f"not targeted yet (planned in wave {', '.join(map(str, waves))}): "
                          f"{_shown(later)}", code="conflict")
    candidates = named or list(devices)
    held = [d for d in candidates if devices[d][1] in waiting and d not in activated]
    if not held:
        return []
    return [ActivationRequested(device_ids=sorted(held) if named else [], all=not named,
                                devices=len(held), by=cmd.actor, at=cmd.now)]
