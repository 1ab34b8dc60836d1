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

Operators (people, with the CLI or the SDK) are users of a third account, `OPERATORS`, which
reaches the rest through service imports only: `sdv.cmd.>` of `SDV` and the devices' ops
subjects of `DEVICES`, both with `share` on. The server then stamps every request that crosses
with a `Nats-Request-Info` header carrying the requester's user key and the user JWT it
authenticated with (replacing a header of that name the client set), so a service learns who
asked from the server, not from the client (`sdv_events.bus.actor`). What each operator may
send is its role's publish permissions (`roles.py`). Operators also read what they look at:
apps' console lines live (a stream import of `sdv.logs.>` from `DEVICES`, where devices publish
them: a message that reached `SDV` through a service import is not passed on by a stream
export of `SDV`, tried on nats-server 2.15.1), package artifacts and devices' reported state
(direct gets), and upload apps (`sdv_uploads`), through the app account's JetStream API imported
under `roles.JS_API_PREFIX`; nothing else of `SDV` — no event, no desired state, no stream
management — is imported, so no operator credential reaches it whatever its permissions say.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sdv_events.auth.claims import account_claims, export, import_
from sdv_events.auth.permissions import ANNOUNCE_PREFIX, RENEW_PREFIX
from sdv_events.auth.roles import JS_API_PREFIX
from sdv_events.provisioning import DESIRED_BUCKET, PACKAGES_BUCKET, REPORTED_BUCKET, UPLOADS_BUCKET

APP_ACCOUNT_NAME = "SDV"
DEVICES_ACCOUNT_NAME = "DEVICES"
OPERATORS_ACCOUNT_NAME = "OPERATORS"

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
# What operators send to the app account: commands, uploads, and the JetStream API requests
# for reading artifacts and reported state and for uploading (imported under JS_API_PREFIX).
_JS_API = "$JS.API"
OPERATOR_JS_API = (
    f"{_JS_API}.STREAM.INFO.OBJ_{UPLOADS_BUCKET}",
    f"{_JS_API}.STREAM.MSG.GET.OBJ_{UPLOADS_BUCKET}",
    f"{_JS_API}.DIRECT.GET.OBJ_{PACKAGES_BUCKET}",
    f"{_JS_API}.DIRECT.GET.OBJ_{PACKAGES_BUCKET}.>",
    f"{_JS_API}.DIRECT.GET.KV_{REPORTED_BUCKET}.>",
)
TO_OPERATOR_SERVICES = ("sdv.cmd.>", f"$O.{UPLOADS_BUCKET}.>", *OPERATOR_JS_API)
# What operators listen to in the devices account (devices' own permissions say who may
# publish there: each device under its own id).
DEVICES_TO_OPERATOR_STREAMS = ("sdv.logs.>",)


def operator_js_subject(subject: str) -> str:
    """`$JS.API.X` as an operator sends it: `$JS.SDV.API.X`."""
    return JS_API_PREFIX + subject[len(_JS_API):] if subject.startswith(_JS_API + ".") else subject


def app_account_claims(app_account: str, app_signing_key: str, devices_account: str) -> dict[str, Any]:
    services = dict.fromkeys((*TO_APP_SERVICES, *TO_OPERATOR_SERVICES))  # once each, in order
    return account_claims(
        app_account, APP_ACCOUNT_NAME, jetstream=True, signing_keys=[app_signing_key],
        exports=[*(export(s, "service") for s in services),
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
        exports=[*(export(s, "service") for s in TO_DEVICE_SERVICES),
                 *(export(s, "stream") for s in DEVICES_TO_OPERATOR_STREAMS)],
        imports=[*(import_(s, "service", app_account) for s in TO_APP_SERVICES),
                 *(import_(s, "stream", app_account) for s in TO_DEVICE_STREAMS)],
    )


def operators_account_claims(operators_account: str, operators_signing_key: str, app_account: str,
                             devices_account: str, revocations: Mapping[str, int] | None = None
                             ) -> dict[str, Any]:
    """`revocations`: operator user public key → unix second at and before which its JWTs no
    longer count (the registry re-issues this account with them, `sdv operators revoke`)."""
    return account_claims(
        operators_account, OPERATORS_ACCOUNT_NAME, jetstream=False,
        signing_keys=[operators_signing_key], revocations=revocations,
        imports=[*(import_(s, "service", app_account, local_subject=operator_js_subject(s), share=True)
                   for s in TO_OPERATOR_SERVICES),
                 *(import_(s, "service", devices_account, share=True) for s in TO_DEVICE_SERVICES),
                 *(import_(s, "stream", devices_account) for s in DEVICES_TO_OPERATOR_STREAMS)],
    )
