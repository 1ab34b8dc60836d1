"""Label keys and values follow Kubernetes' syntax."""

import pytest

from sdv_events.labels import InvalidLabel, check_labels


@pytest.mark.parametrize("labels", [
    {"env": "test"}, {"example.com/group": "canary"}, {"a_b.c-d": ""}, {"x": "1.2_3-4"},
])
def test_valid_labels_pass(labels: dict[str, str]) -> None:
    assert check_labels(labels) == labels


@pytest.mark.parametrize("labels", [
    {"": "x"}, {"-env": "x"}, {"env-": "x"}, {"Bad.Prefix/x": "1"}, {"a" * 64: "x"},
    {"env": "-x"}, {"env": "a b"}, {"env": "x" * 64}, {f"k{i}": "v" for i in range(65)},
])
def test_invalid_labels_are_refused_with_a_typed_error(labels: dict[str, str]) -> None:
    with pytest.raises(InvalidLabel) as caught:
        check_labels(labels)
    assert caught.value.code == "invalid_request"
