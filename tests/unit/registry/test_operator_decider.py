"""The operator decider: given events / when command / then events, no servers."""

from __future__ import annotations

import pytest

from sdv_events.errors import DomainError
from sdv_events.schemas.operators import OperatorAdded, OperatorRevoked
from sdv_registry.domain.operator import AddOperator, RevokeOperator, operator_decider

KEY = "U" + "A" * 55
NEW_KEY = "U" + "B" * 55
ADDED = OperatorAdded("ann", "viewer", KEY)
REVOKED = OperatorRevoked("ann", KEY, "left")


def test_adding_an_operator_records_its_role_and_key() -> None:
    assert operator_decider.run([], AddOperator("ann", "viewer", KEY)) == [ADDED]


def test_adding_it_again_as_it_is_changes_nothing_but_another_key_or_role_is_a_conflict() -> None:
    assert operator_decider.run([ADDED], AddOperator("ann", "viewer", KEY)) == []
    for command in (AddOperator("ann", "admin", KEY), AddOperator("ann", "viewer", NEW_KEY)):
        with pytest.raises(DomainError, match="revoke it before") as caught:
            operator_decider.run([ADDED], command)
        assert caught.value.code == "conflict"


def test_revoking_records_the_key_the_server_is_to_refuse_and_again_changes_nothing() -> None:
    assert operator_decider.run([ADDED], RevokeOperator("ann", "left")) == [REVOKED]
    assert operator_decider.run([ADDED, REVOKED], RevokeOperator("ann")) == []
    with pytest.raises(DomainError) as caught:
        operator_decider.run([], RevokeOperator("nobody"))
    assert caught.value.code == "not_found"


def test_a_revoked_name_comes_back_only_with_a_new_key() -> None:
    assert operator_decider.run([ADDED, REVOKED], AddOperator("ann", "operator", NEW_KEY)) == [
        OperatorAdded("ann", "operator", NEW_KEY)]
    with pytest.raises(DomainError, match="this key was revoked"):
        operator_decider.run([ADDED, REVOKED], AddOperator("ann", "operator", KEY))


def test_the_bootstrap_admins_name_is_not_given() -> None:
    with pytest.raises(DomainError, match="reserved"):
        operator_decider.run([], AddOperator("admin", "admin", KEY, frozenset({"admin"})))
