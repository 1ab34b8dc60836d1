"""What each service may do on the bus — least privilege inside the app account `SDV` (the server
enforces it; `sdv up` and `sdv deploy init` give each its own user). Operators are not in this
account at all: their roles are in `roles.py`.

A service publishes events only of the categories whose store it owns (`stream_owners.py`), so
a compromised monitor cannot forge a rollout's events; it calls other services' commands and the
JetStream API, but no one may delete a stream or purge or delete the events, dead letters or
logs (the bus copy of the record stays whole; the stores are the truth). It hears only its own
command subjects, its inboxes and what its role needs (the registry: announcements, renewals,
heartbeats; the monitor: heartbeats — it reads events and apps' console lines through JetStream
consumers, whose deliveries come to its inboxes). Answers to requests go out through the response
permission, whatever the reply subject.
"""

from __future__ import annotations

from sdv_events.auth.claims import Permissions
from sdv_events.provisioning import DESIRED_BUCKET, PACKAGES_BUCKET, UPLOADS_BUCKET
from sdv_events.stream_owners import STREAM_OWNERS

RESPONSE_TTL_S = 60.0
# The bus's copy of the record: nobody deletes these streams or their messages.
PROTECTED_STREAMS = ("SDV_EVENTS", "SDV_DLQ", "SDV_LOGS")
_DESTRUCTIVE = (
    "$JS.API.STREAM.DELETE.>",
    *(f"$JS.API.STREAM.{op}.{stream}" for stream in PROTECTED_STREAMS for op in ("PURGE", "MSG.DELETE")),
)
_JETSTREAM = ("$JS.API.>", "$JS.ACK.>", "$JS.FC.>", "_INBOX.>")
_WRITES: dict[str, tuple[str, ...]] = {
    "packager": (f"$O.{PACKAGES_BUCKET}.>", f"$O.{UPLOADS_BUCKET}.>"),
    "orchestrator": (f"$KV.{DESIRED_BUCKET}.>",),
}
_HEARS: dict[str, tuple[str, ...]] = {
    "registry": ("sdv.announce.*", "sdv.renew.*", "sdv.hb.*"),
    "monitor": ("sdv.hb.*",),
}


def event_subjects_of(service: str) -> tuple[str, ...]:
    return tuple(f"sdv.evt.{category}.>" for category, owner in sorted(STREAM_OWNERS.items())
                 if owner == service)


def service_permissions(service: str) -> Permissions:
    return Permissions(
        pub_allow=(*event_subjects_of(service), "sdv.cmd.>", "sdv.dlq.>", *_JETSTREAM,
                   *_WRITES.get(service, ())),
        pub_deny=_DESTRUCTIVE,
        sub_allow=(f"sdv.cmd.{service}.>", "_INBOX.>", *_HEARS.get(service, ())),
        resp_max=1, resp_ttl_s=RESPONSE_TTL_S,
    )

