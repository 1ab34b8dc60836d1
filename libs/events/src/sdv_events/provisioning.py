"""Idempotent provisioning of every JetStream stream, KV bucket and object store of the suite.

Run by every service at start: creating what is missing, updating what drifted, leaving what
matches. `replicas` is 1 on one machine and 3 on a NATS cluster (see deploy/).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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
from nats.js.errors import APIError, BadRequestError, NotFoundError
from pydantic import Field

from sdv_events.settings import Settings

log = structlog.get_logger("sdv.provisioning")

EVENTS_STREAM = "SDV_EVENTS"
LOGS_STREAM = "SDV_LOGS"
DLQ_STREAM = "SDV_DLQ"
DESIRED_BUCKET = "sdv_desired"
REPORTED_BUCKET = "sdv_reported"
PACKAGES_BUCKET = "sdv_packages"
# Operators' raw app uploads (consumed by the packager's publish): a bucket of its own, because
# devices may read `sdv_packages` and an upload may hold what the packager leaves out (`.env`).
UPLOADS_BUCKET = "sdv_uploads"
EVENT_SUBJECT_ROOT = "sdv.evt"
DLQ_SUBJECT_ROOT = "sdv.dlq"
# Nats-Msg-Id dedupe horizon: a relay restarted within it never duplicates an event. The
# server keeps one entry per message id for this long, so it bounds memory too.
DUPLICATE_WINDOW_S = 600.0
_DAY = 86_400.0


@dataclass(frozen=True)
class EventsRetention:
    """How long and how much of `SDV_EVENTS` JetStream keeps. The bus is a carrier, not the
    record: each service's PostgreSQL store keeps every event forever and serves it (history,
    rebuilds), so old messages may go. Every service provisions the stream, so all must agree:
    set it through the environment the whole suite shares."""

    max_age_s: float = 30 * _DAY
    max_bytes: int = 10 << 30

    def __post_init__(self) -> None:
        if self.max_age_s <= 0 or self.max_bytes <= 0:
            raise ValueError(f"SDV_EVENTS retention must be positive, got {self}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EventsRetention:
        """`SDV_EVENTS_MAX_AGE_S` (seconds) and `SDV_EVENTS_MAX_BYTES`, else the defaults; a bad
        value raises `SettingsError` naming its variable."""
        read = _RetentionSettings.load(env)
        return cls(max_age_s=read.max_age_s, max_bytes=read.max_bytes)


class _RetentionSettings(Settings):
    max_age_s: float = Field(EventsRetention.max_age_s, validation_alias="SDV_EVENTS_MAX_AGE_S", gt=0)
    max_bytes: int = Field(EventsRetention.max_bytes, validation_alias="SDV_EVENTS_MAX_BYTES", gt=0)


def stream_configs(
    replicas: int = 1, retention: EventsRetention = EventsRetention()
) -> list[StreamConfig]:
    return [
        # Nothing may remove single events or purge the stream: a consumer that missed a
        # removed message would never know. Age and size limits drop the oldest only.
        StreamConfig(
            name=EVENTS_STREAM, subjects=[f"{EVENT_SUBJECT_ROOT}.>"],
            retention=RetentionPolicy.LIMITS, storage=StorageType.FILE,
            max_age=retention.max_age_s, max_bytes=retention.max_bytes,
            discard=DiscardPolicy.OLD, deny_delete=True, deny_purge=True,
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
        try:
            await js.update_stream(config)
        except APIError as exc:
            # The server refuses some changes for good (a smaller replica count on one node,
            # turning deny_delete/deny_purge off again). Running on the stream as it is beats
            # not starting; the log says what differs.
            log.error("stream_update_refused", stream=config.name, fields=sorted(drifted),
                      error=exc.description, code=exc.err_code)
            return
        log.info("stream_updated", stream=config.name, fields=sorted(drifted))


async def provision(
    js: JetStreamContext, *, replicas: int = 1, retention: EventsRetention | None = None
) -> None:
    """Create or update SDV_EVENTS, SDV_LOGS, SDV_DLQ, the KV buckets and the object stores.
    `retention` of SDV_EVENTS defaults to `EventsRetention.from_env()`."""
    retention = retention or EventsRetention.from_env()
    for config in stream_configs(replicas, retention):
        await _ensure_stream(js, config)
    for kv in bucket_configs(replicas):
        try:
            await js.key_value(kv.bucket)
        except (NotFoundError, BadRequestError):
            await js.create_key_value(kv)
            log.info("bucket_created", bucket=kv.bucket)
    for bucket, description in (
        (PACKAGES_BUCKET, "Signed vehicle-app package artifacts by digest"),
        (UPLOADS_BUCKET, "Raw app uploads awaiting publish (never readable by devices)"),
    ):
        try:
            await js.object_store(bucket)
        except (NotFoundError, BadRequestError):
            await js.create_object_store(
                bucket,
                ObjectStoreConfig(storage=StorageType.FILE, replicas=replicas, description=description),
            )
            log.info("object_store_created", bucket=bucket)
