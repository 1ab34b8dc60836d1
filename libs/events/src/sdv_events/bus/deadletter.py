"""Dead letters: a message no one can decode goes to `sdv.dlq.<original subject>` with the reason
in headers, and the consumer goes on with the next message."""

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
    out = {k: v for k, v in (headers or {}).items() if not k.startswith("Nats-")}
    out.update({
        "Sdv-Dlq-Reason": error.reason,
        "Sdv-Dlq-Path": error.path,
        "Sdv-Dlq-Detail": error.detail[:512],
        "Sdv-Dlq-Subject": subject,
        "Sdv-Dlq-Consumer": consumer,
    })
    if dedupe_id is not None:
        out["Nats-Msg-Id"] = dedupe_id
    await js.publish(dead_letter_subject(subject), payload, headers=out)
    log.warning("dead_lettered", subject=subject, consumer=consumer, reason=error.reason,
                path=error.path, detail=error.detail)
