"""Pushing a re-issued account JWT to running servers (`$SYS.REQ.ACCOUNT.<acc>.CLAIMS.UPDATE`,
as a user of the system account). This is how revocations take effect: the server closes the
connections of revoked users at once and refuses their JWTs afterwards.

Tried against nats-server 2.15.1 with `resolver: MEMORY`: the account-specific subject answers
`{"data": {"code": 200, "message": "jwt updated"}}`; the generic `$SYS.REQ.CLAIMS.UPDATE` has
no responder in that mode (only the full/directory resolver serves it). A memory resolver
forgets pushed updates when the server restarts, so the pusher re-sends periodically.
"""

from __future__ import annotations

import msgspec
from nats.aio.client import Client as NatsClient

from sdv_events.errors import SdvError


class ClaimsUpdateFailed(SdvError):
    """The server did not accept the account JWT (or no server answered)."""


class _Data(msgspec.Struct):
    code: int = 0
    message: str = ""
    description: str = ""


class _Reply(msgspec.Struct):
    data: _Data | None = None
    error: _Data | None = None


def claims_update_subject(account: str) -> str:
    return f"$SYS.REQ.ACCOUNT.{account}.CLAIMS.UPDATE"


async def push_account_jwt(system_nc: NatsClient, account: str, account_jwt: str,
                           *, timeout: float = 2.0) -> None:
    """Send `account_jwt` to the server(s); raise `ClaimsUpdateFailed` unless it was applied."""
    try:
        msg = await system_nc.request(claims_update_subject(account), account_jwt.encode(),
                                      timeout=timeout)
    except Exception as exc:  # no responders / timeout: the update did not happen
        raise ClaimsUpdateFailed(f"claims update for {account[:8]}… got no answer: {exc!r}") from None
    try:
        reply = msgspec.json.decode(msg.data, type=_Reply)
    except msgspec.DecodeError as exc:
        raise ClaimsUpdateFailed(f"unreadable claims update reply: {exc}") from None
    result = reply.error or reply.data
    if result is None or result.code != 200:
        detail = (result.message or result.description) if result else msg.data.decode(errors="replace")
        raise ClaimsUpdateFailed(f"server refused the account JWT: {detail}")
