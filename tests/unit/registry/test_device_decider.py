"""The device decider: given events / when command / then events (or the refusal), no servers
and no look at the decider's state."""

from __future__ import annotations

from datetime import UTC, datetime

from sdv_events.decider_testing import Refusal
from sdv_events.decider_testing import then as decided
from sdv_events.schemas.devices import (
    Capabilities,
    DeviceAccepted,
    DeviceAnnounced,
    DeviceCameOnline,
    DeviceCapabilitiesUpdated,
    DeviceDecommissioned,
    DeviceLabelsChanged,
    DevicePreauthorized,
    DeviceRejected,
    DeviceWentOffline,
)
from sdv_registry.domain.device import (
    Accept,
    AnnounceDevice,
    ChangeLabels,
    Decommission,
    DeviceCommand,
    DeviceEvent,
    MarkOffline,
    MarkOnline,
    Preauthorize,
    Reject,
    device_decider,
)

D = "orin-1"
KEY = "U" + "A" * 55
OTHER_KEY = "U" + "B" * 55
CAPS = Capabilities(hardware_type="jetson-orin", arch="aarch64", runtimes=["docker"],
                    python_version="3.11", agent_version="0.1", memory_mb=8192, storage_mb=1000)
T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
ANNOUNCED = DeviceAnnounced(D, KEY, CAPS)
ACCEPTED = DeviceAccepted(D, KEY, "operator")


def announce(key: str = KEY, caps: Capabilities = CAPS, **kw) -> AnnounceDevice:  # type: ignore[no-untyped-def]
    return AnnounceDevice(device_id=D, public_key=key, capabilities=caps, **kw)


def then(given: list[DeviceEvent], when: DeviceCommand) -> list[DeviceEvent] | Refusal:
    return decided(device_decider, given=given, when=when)


def refused(given: list[DeviceEvent], command: DeviceCommand, code: str) -> str:
    refusal = then(given, command)
    assert isinstance(refusal, Refusal), f"decided {refusal} instead of refusing"
    assert refusal.code == code, refusal
    return refusal.message


def test_first_announce_makes_a_pending_device() -> None:
    assert then([], announce()) == [ANNOUNCED]
    # Pending: it waits for an operator, who accepts it; it has no presence until then.
    assert then([ANNOUNCED], Accept(D)) == [DeviceAccepted(D, KEY, "operator")]
    assert then([ANNOUNCED], MarkOnline(D, T0)) == []


def test_announcing_again_changes_nothing_unless_capabilities_changed() -> None:
    assert then([ANNOUNCED], announce()) == []
    bigger = Capabilities(**{**{f: getattr(CAPS, f) for f in CAPS.__struct_fields__}, "memory_mb": 16384})
    assert then([ANNOUNCED, ACCEPTED], announce(caps=bigger)) == [
        DeviceCapabilitiesUpdated(D, bigger)]


def test_another_key_is_refused_while_pending_or_accepted() -> None:
    assert "another public key" in refused([ANNOUNCED], announce(OTHER_KEY), "conflict")
    refused([ANNOUNCED, ACCEPTED], announce(OTHER_KEY), "conflict")


def test_operator_accepts_a_pending_device_once() -> None:
    assert then([ANNOUNCED], Accept(D, "ok")) == [DeviceAccepted(D, KEY, "operator", "ok")]
    assert then([ANNOUNCED, ACCEPTED], Accept(D)) == []


def test_unknown_device_cannot_be_accepted_rejected_or_labelled() -> None:
    refused([], Accept(D), "not_found")
    refused([], Reject(D), "not_found")
    refused([], ChangeLabels(D, {"a": "b"}), "not_found")


def test_reject_and_decommission_carry_the_key_to_revoke() -> None:
    assert then([ANNOUNCED, ACCEPTED], Reject(D, "stolen")) == [DeviceRejected(D, KEY, "stolen")]
    assert then([ANNOUNCED, ACCEPTED], Decommission(D, "sold")) == [
        DeviceDecommissioned(D, KEY, "sold")]


def test_a_refused_key_changes_nothing_and_another_key_starts_over_as_pending() -> None:
    """Rejecting a squatter frees the id for the real device's key (issue 11): never the
    rejected or decommissioned key, and never by the fleet token's shortcut."""
    rejected = [ANNOUNCED, DeviceRejected(D, KEY)]
    assert then(rejected, announce()) == []
    assert then(rejected, announce(OTHER_KEY)) == [DeviceAnnounced(D, OTHER_KEY, CAPS)]
    retried = [*rejected, DeviceAnnounced(D, OTHER_KEY, CAPS)]
    assert then(retried, announce()) == []  # the rejected key stays refused
    assert then(retried, Accept(D)) == [DeviceAccepted(D, OTHER_KEY, "operator")]
    gone = [ANNOUNCED, ACCEPTED, DeviceDecommissioned(D, KEY)]
    assert then(gone, announce()) == []
    refused(gone, Accept(D), "conflict")
    fleet = AnnounceDevice(device_id=D, public_key=OTHER_KEY, capabilities=CAPS, fleet_token_valid=True)
    assert then(gone, fleet) == [DeviceAnnounced(D, OTHER_KEY, CAPS)]
    assert then(gone, Decommission(D)) == []


def test_accept_naming_a_key_fingerprint_admits_only_that_key() -> None:
    from sdv_events.enrolment import key_fingerprint

    refused([ANNOUNCED], Accept(D, "", key_fingerprint(OTHER_KEY)), "conflict")
    assert then([ANNOUNCED], Accept(D, "", key_fingerprint(KEY))) == [
        DeviceAccepted(D, KEY, "operator")]


def test_rejected_device_can_be_accepted_later() -> None:
    assert then([ANNOUNCED, DeviceRejected(D, KEY)], Accept(D)) == [
        DeviceAccepted(D, KEY, "operator")]


def test_preauthorised_device_with_its_token_is_accepted_at_once() -> None:
    given = [DevicePreauthorized(D, "h1", {"env": "test"})]
    assert then(given, announce(token_sha256="h1")) == [
        ANNOUNCED, DeviceAccepted(D, KEY, "preauthorized")]
    assert "token" in refused(given, announce(token_sha256="h2"), "forbidden")
    refused(given, announce(), "forbidden")
    # It carries the labels it was pre-authorised with: setting them again changes nothing.
    assert then(given, ChangeLabels(D, {"env": "test"})) == []
    assert then(given, ChangeLabels(D, {"env": "prod"})) == [DeviceLabelsChanged(D, {"env": "prod"})]


def test_fleet_token_accepts_a_new_device() -> None:
    assert then([], announce(fleet_token_valid=True)) == [
        ANNOUNCED, DeviceAccepted(D, KEY, "fleet_token")]


def test_preauthorising_an_announced_device_is_refused() -> None:
    refused([ANNOUNCED], Preauthorize(D, "h"), "conflict")


def test_labels_merge_and_remove_and_only_changes_are_events() -> None:
    given = [ANNOUNCED, DeviceLabelsChanged(D, {"env": "test", "type": "orin"})]
    assert then(given, ChangeLabels(D, {"env": "prod"}, ["type"])) == [
        DeviceLabelsChanged(D, {"env": "prod"})]
    assert then(given, ChangeLabels(D, {"env": "test"})) == []
    assert "invalid label key" in refused(given, ChangeLabels(D, {"bad key": "x"}), "invalid_request")
    assert "invalid value" in refused(given, ChangeLabels(D, {"env": "no spaces"}), "invalid_request")


def test_presence_transitions_only_for_accepted_devices_and_only_on_change() -> None:
    accepted = [ANNOUNCED, ACCEPTED]
    assert then([ANNOUNCED], MarkOnline(D, T0)) == []
    assert then(accepted, MarkOnline(D, T0)) == [DeviceCameOnline(D, T0)]
    online = [*accepted, DeviceCameOnline(D, T0)]
    assert then(online, MarkOnline(D, T0)) == []
    assert then(online, MarkOffline(D, T0, 15.0)) == [DeviceWentOffline(D, T0, 15.0)]
    assert then([*online, DeviceWentOffline(D, T0, 15.0)], MarkOffline(D, T0, 15.0)) == []
