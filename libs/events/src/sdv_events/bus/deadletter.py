"""Dead letters: a message no one can decode — or whose handling kept failing (parked) — goes to
`sdv.dlq.<original subject>` with the reason in headers, and the consumer goes on with the next
message."""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from nats.js import JetStreamContext

from sdv_events.errors import DecodeError
from sdv_events.subjects import dead_letter_subject

log = structlog.get_logger("sdv.dlq")


async def dead_letter(
    js: JetStreamContext,
    *,
    subject: str,
    payload: bytes,
    error: DecodeError,
    consumer: str,
    headers: Mapping[str, str] | None = None,
    dedupe_id: str | None = None,
) -> None:
    await park(js, subject=subject, payload=payload, reason=error.reason, detail=error.detail,
               path=error.path, consumer=consumer, headers=headers, dedupe_id=dedupe_id)


async def park(
    js: JetStreamContext,
    *,
    subject: str,
    payload: bytes,
    reason: str,
    detail: str,
    consumer: str,
    path: str = "$",
    headers: Mapping[str, str] | None = None,
    dedupe_id: str | None = None,
    log_it: bool = True,
) -> None:
    """Publish to the dead-letter stream with `reason` (`malformed`, … or `apply_failed`);
    `log_it=False` when the caller logs the failure itself (one line per failure)."""
    out = {k: v for k, v in (headers or {}).items() if not k.startswith("Nats-")}
    out.update({
        "Sdv-Dlq-Reason": reason,
        "Sdv-Dlq-Path": path,
        "Sdv-Dlq-Detail": detail[:512],
        "Sdv-Dlq-Subject": subject,
        "Sdv-Dlq-Consumer": consumer,
    })
    if dedupe_id is not None:
        out["Nats-Msg-Id"] = dedupe_id
    await js.publish(dead_letter_subject(subject), payload, headers=out)
    if log_it:
        log.warning("dead_lettered", subject=subject, consumer=consumer, reason=reason,
                    path=path, detail=detail)
