"""The two application accounts and what crosses between them.

Services live in the app account `SDV` (JetStream, every stream and bucket). Devices and the
shared enrolment user live in `DEVICES`, which has no JetStream and sees of `SDV` only what is
imported here. The split exists because nats-server checks a message's subject against the
sender's publish permissions but never its *reply* subject: a device in `SDV` could direct-get
its own desired key with reply-to `$KV.sdv_desired.<another device>` and JetStream would write the
reply into that key (or into `sdv.cmd.*`). A request that crosses accounts through a *service*
import arrives with its reply subject replaced by a `_R_.…` subject the server made, and the
answer is routed back into the importing account only — so a device can no longer choose where in
`SDV` a reply lands. (Replies still land anywhere in `DEVICES`: receivers there treat what arrives
on their subjects accordingly, see the edge agent's desired watch and ops server.)

What devices *send to* is exported by `SDV` as services (publish-with-ack and request/reply work
across accounts; JetStream captures what arrives through an import like any other publish):
their facts, heartbeats, console lines, reported state, direct gets of desired keys and package
objects, announces and renewals. Their desired key is exported as a *stream* (a plain
subscription watches it). `DEVICES` exports the devices' ops subjects as a service to `SDV`.
Exports are wildcards; which device may use which subject is still each device user's own
permissions (`permissions.device_permissions`, own id only). `account_token_position` does not
help here: it ties an export's subject to the *importing account*, and all devices share one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sdv_events.auth.claims import account_claims, export, import_
from sdv_events.auth.permissions import ANNOUNCE_PREFIX, RENEW_PREFIX
from sdv_events.provisioning import DESIRED_BUCKET, PACKAGES_BUCKET, REPORTED_BUCKET

APP_ACCOUNT_NAME = "SDV"
DEVICES_ACCOUNT_NAME = "DEVICES"

# Subjects of the app account that devices send to (requests or publishes awaiting a JetStream ack).
TO_APP_SERVICES = (
    "sdv.evt.agent.>",
    "sdv.hb.>",
    "sdv.logs.>",
    f"$KV.{REPORTED_BUCKET}.>",
    f"$JS.API.DIRECT.GET.KV_{DESIRED_BUCKET}.>",
    f"$JS.API.DIRECT.GET.OBJ_{PACKAGES_BUCKET}",  # a chunk by sequence (the subject in the body)
    f"$JS.API.DIRECT.GET.OBJ_{PACKAGES_BUCKET}.>",  # an object's metadata by its subject
    f"{ANNOUNCE_PREFIX}.>",
    f"{RENEW_PREFIX}.>",
)
# Subjects of the app account that devices only listen to.
TO_DEVICE_STREAMS = (f"$KV.{DESIRED_BUCKET}.>",)
# Subjects of the devices account that services send requests to.
TO_DEVICE_SERVICES = ("sdv.device.*.ops.>",)


def app_account_claims(app_account: str, app_signing_key: str, devices_account: str) -> dict[str, Any]:
    return account_claims(
        app_account, APP_ACCOUNT_NAME, jetstream=True, signing_keys=[app_signing_key],
        exports=[*(export(s, "service") for s in TO_APP_SERVICES),
                 *(export(s, "stream") for s in TO_DEVICE_STREAMS)],
        imports=[import_(s, "service", devices_account) for s in TO_DEVICE_SERVICES],
    )


def devices_account_claims(devices_account: str, devices_signing_key: str, app_account: str,
                           revocations: Mapping[str, int] | None = None) -> dict[str, Any]:
    """`revocations`: device user public key → unix second at and before which its JWTs no
    longer count (the registry re-issues this account with them)."""
    return account_claims(
        devices_account, DEVICES_ACCOUNT_NAME, jetstream=False, signing_keys=[devices_signing_key],
        revocations=revocations,
        exports=[export(s, "service") for s in TO_DEVICE_SERVICES],
        imports=[*(import_(s, "service", app_account) for s in TO_APP_SERVICES),
                 *(import_(s, "stream", app_account) for s in TO_DEVICE_STREAMS)],
    )
