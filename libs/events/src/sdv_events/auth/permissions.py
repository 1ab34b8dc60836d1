"""Who may publish and subscribe where (DESIGN.md, "The bus"; FACTS.md, "NATS per-device
permissions"). The server enforces these; every entry is one a device needs, nothing wider.

A device reads only its own desired-state key (a core subscription to the key's subject, direct
gets with the key in the get subject) and package objects (direct gets: metadata by subject,
chunks by sequence), and publishes only subjects carrying its own id. It may call no other
JetStream API: no STREAM.INFO (with a subject filter it lists every device's key), no consumer
of any kind (a consumer's deliver subject is the creator's free choice, unchecked by the server,
and durable ones outlive the device's connection). Its inbox is `_INBOX.<device_id>` so no device
can read another's replies. It renews its credentials over its own connection
(`sdv.renew.<device_id>`, open to that device only). Before acceptance (and when its JWT has
expired) a device holds only the shared enrolment user, which may announce and hear the answer
on the enrolment inbox, nothing else.

These are user permissions inside the devices account (`accounts.py`): they say which of the
subjects imported from the app account each device may use; the account boundary is what keeps
the reply subjects devices choose out of the app account.
"""

from __future__ import annotations

from sdv_events.auth.claims import Permissions
from sdv_events.provisioning import DESIRED_BUCKET, PACKAGES_BUCKET, REPORTED_BUCKET
from sdv_events.subjects import heartbeat_subject

ANNOUNCE_PREFIX = "sdv.announce"
RENEW_PREFIX = "sdv.renew"
ENROL_INBOX_PREFIX = "_ENROL"  # a namespace of its own: no device id can collide with it
DEVICE_RESP_TTL_S = 300.0


def announce_subject(device_id: str) -> str:
    return f"{ANNOUNCE_PREFIX}.{device_id}"


def renew_subject(device_id: str) -> str:
    return f"{RENEW_PREFIX}.{device_id}"


def device_inbox_prefix(device_id: str) -> str:
    return f"_INBOX.{device_id}"


def device_permissions(device_id: str) -> Permissions:
    kv, obj = f"KV_{DESIRED_BUCKET}", f"OBJ_{PACKAGES_BUCKET}"
    desired_key = f"$KV.{DESIRED_BUCKET}.{device_id}"
    return Permissions(
        pub_allow=(
            f"sdv.evt.agent.{device_id}.>",
            heartbeat_subject(device_id),
            f"sdv.logs.{device_id}.>",
            f"$KV.{REPORTED_BUCKET}.{device_id}",
            f"$JS.API.DIRECT.GET.{kv}.{desired_key}",
            f"$JS.API.DIRECT.GET.{obj}",
            f"$JS.API.DIRECT.GET.{obj}.$O.{PACKAGES_BUCKET}.M.*",
            renew_subject(device_id),
        ),
        sub_allow=(f"{device_inbox_prefix(device_id)}.>", f"sdv.device.{device_id}.ops.>", desired_key),
        resp_max=1,
        resp_ttl_s=DEVICE_RESP_TTL_S,
    )


def enrolment_permissions() -> Permissions:
    return Permissions(pub_allow=(f"{ANNOUNCE_PREFIX}.*",), sub_allow=(f"{ENROL_INBOX_PREFIX}.>",))
