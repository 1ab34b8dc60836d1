"""Label keys and values, with the syntax of Kubernetes labels so selectors read the same.

key   = [prefix "/"] name; prefix a DNS subdomain (≤ 253), name ≤ 63 of [A-Za-z0-9-_.] that
        begins and ends alphanumeric.
value = empty, or ≤ 63 of the same characters, beginning and ending alphanumeric.
A group is a label too (`group=canary`): a selector picks a group like any other label.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from sdv_events.errors import DomainError

_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)*"
KEY_RE = re.compile(rf"(?:{_PREFIX}/)?{_NAME}")
VALUE_RE = re.compile(rf"(?:{_NAME})?")
MAX_LABELS = 64


class InvalidLabel(DomainError):
    code = "invalid_request"


def check_key(key: str) -> str:
    prefix = key.rpartition("/")[0]
    if not KEY_RE.fullmatch(key) or len(prefix) > 253:
        raise InvalidLabel(
            f"invalid label key {key!r}: [prefix/]name, name up to 63 letters, digits, '-', '_' "
            "or '.', beginning and ending with a letter or digit"
        )
    return key


def check_value(key: str, value: str) -> str:
    if not VALUE_RE.fullmatch(value):
        raise InvalidLabel(
            f"invalid value {value!r} for label {key!r}: empty, or up to 63 letters, digits, "
            "'-', '_' or '.', beginning and ending with a letter or digit"
        )
    return value


def check_labels(labels: Mapping[str, str]) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise InvalidLabel(f"{len(labels)} labels: at most {MAX_LABELS} per device")
    return {check_key(k): check_value(k, v) for k, v in labels.items()}
