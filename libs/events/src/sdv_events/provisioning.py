"""Idempotent provisioning of every JetStream stream, KV bucket and object store of the suite.

Run by every service at start: creating what is missing, updating what drifted, leaving what
matches. `replicas` is 1 on one machine and 3 on a NATS cluster (see deploy/).
"""

from __future__ import annotations

import structlog
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

log = structlog.get_logger("sdv.provisioning")

EVENTS_STREAM = "SDV_EVENTS"
LOGS_STREAM = "SDV_LOGS"
DLQ_STREAM = "SDV_DLQ"
DESIRED_BUCKET = "sdv_desired"
REPORTED_BUCKET = "sdv_reported"
PACKAGES_BUCKET = "sdv_packages"
EVENT_SUBJECT_ROOT = "sdv.evt"
DLQ_SUBJECT_ROOT = "sdv.dlq"
# Nats-Msg-Id dedupe horizon: a relay restarted within it never duplicates an event. The
# server keeps one entry per message id for this long, so it bounds memory too.
DUPLICATE_WINDOW_S = 600.0
_DAY = 86_400.0


def stream_configs(replicas: int = 1) -> list[StreamConfig]:
    return [
        StreamConfig(
            name=EVENTS_STREAM, subjects=[f"{EVENT_SUBJECT_ROOT}.>"],
            retention=RetentionPolicy.LIMITS, storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_S, num_replicas=replicas,
            description="Domain events of every service and device facts of every agent",
        ),
        StreamConfig(
            name=LOGS_STREAM, subjects=["sdv.logs.>"], retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE, max_bytes=1 << 30, max_age=7 * _DAY,
            max_msgs_per_subject=100_000, discard=DiscardPolicy.OLD, num_replicas=replicas,
            duplicate_window=120.0,
            description="Console output of vehicle apps, bounded by size and age",
        ),
        StreamConfig(
            name=DLQ_STREAM, subjects=[f"{DLQ_SUBJECT_ROOT}.>"], retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE, max_age=30 * _DAY, duplicate_window=DUPLICATE_WINDOW_S,
            num_replicas=replicas,
            description="Messages no consumer could decode, with the reason in headers",
        ),
    ]


def bucket_configs(replicas: int = 1) -> list[KeyValueConfig]:
    # direct=True: a device's permission to read one key is expressible only via DIRECT.GET.
    return [
        KeyValueConfig(bucket=DESIRED_BUCKET, history=5, storage=StorageType.FILE,
                       replicas=replicas, direct=True,
                       description="Desired state per device, written by the orchestrator"),
        KeyValueConfig(bucket=REPORTED_BUCKET, history=1, storage=StorageType.FILE,
                       replicas=replicas, direct=True,
                       description="Reported state per device, written by its agent"),
    ]


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        info = await js.stream_info(config.name)  # type: ignore[arg-type]
    except NotFoundError:
        await js.add_stream(config)
        log.info("stream_created", stream=config.name)
        return
    current = info.config
    wanted = config.as_dict()
    drifted = {k: v for k, v in wanted.items() if current.as_dict().get(k) != v and v is not None}
    if drifted:
        await js.update_stream(config)
        log.info("stream_updated", stream=config.name, fields=sorted(drifted))


async def provision(js: JetStreamContext, *, replicas: int = 1) -> None:
    """Create or update SDV_EVENTS, SDV_LOGS, SDV_DLQ, the KV buckets and the object store."""
    for config in stream_configs(replicas):
        await _ensure_stream(js, config)
    for kv in bucket_configs(replicas):
        try:
            await js.key_value(kv.bucket)
        except (NotFoundError, BadRequestError):
            await js.create_key_value(kv)
            log.info("bucket_created", bucket=kv.bucket)
    try:
        await js.object_store(PACKAGES_BUCKET)
    except (NotFoundError, BadRequestError):
        await js.create_object_store(
            PACKAGES_BUCKET,
            ObjectStoreConfig(storage=StorageType.FILE, replicas=replicas,
                              description="Signed vehicle-app package artifacts by digest"),
        )
        log.info("object_store_created", bucket=PACKAGES_BUCKET)
