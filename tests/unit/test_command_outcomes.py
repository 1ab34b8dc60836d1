"""A refused command reaches the caller as the typed error its code names, the same in every
service (`raise_if_refused`), and the outcome keeps its wire form."""

from __future__ import annotations

import uuid

import pytest

from sdv_events.bus import Conflict, Forbidden, InvalidRequest, NotFound, Rejected
from sdv_events.codec import decode_as, encode
from sdv_events.commands import Accepted, CommandOutcome, Refused, raise_if_refused


@pytest.mark.parametrize(("code", "error"), [
    ("conflict", Conflict), ("not_found", NotFound), ("invalid_request", InvalidRequest),
    ("forbidden", Forbidden), ("rejected", Rejected),
])
def test_a_refusal_raises_the_error_of_its_code(code: str, error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        raise_if_refused(Refused("device-car-1", code, "the reason, for people"))
    assert type(caught.value) is error
    assert caught.value.code == code
    assert caught.value.message == "the reason, for people"


def test_a_deciders_own_code_is_rejected_and_keeps_the_code_as_the_reason() -> None:
    with pytest.raises(Rejected) as caught:
        raise_if_refused(Refused("package-door", "yanked", "door 1.0.0 is yanked"))
    assert caught.value.code == "rejected"
    assert caught.value.details == {"reason": "yanked"}
    assert caught.value.message == "door 1.0.0 is yanked"


def test_an_acceptance_passes_through() -> None:
    accepted = Accepted("package-door", 3, [uuid.uuid4()], ["packager.PackageYanked.v1"])
    assert raise_if_refused(accepted) is accepted


def test_a_refusal_keeps_its_wire_tag() -> None:
    """Outcomes encoded before the rename (tag "rejected") still decode."""
    raw = b'{"type":"rejected","stream_id":"note-1","code":"conflict","message":"no"}'
    decoded = decode_as(raw, CommandOutcome)  # type: ignore[arg-type]
    assert decoded == Refused("note-1", "conflict", "no")
    assert encode(decoded).startswith(raw[:-1])
