"""The signal catalogue a vehicle's KUKSA databroker serves: path → kind and datatype, as the
databroker's metadata says (kuksa.val.v2 `ListMetadata`, or v1 `Get` of metadata). Agents report
it (the fact `agent.SignalCatalogReported`, once per change) and name it in their capabilities by
`catalog_digest`; planning checks an app's declared signals against it.

Pure: hashing and shapes only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Annotated

import msgspec

MAX_SIGNALS = 20_000  # VSS 5.0 holds ~1,100 leaves; a generous bound keeps the fact bounded
SignalPath = Annotated[str, msgspec.Meta(max_length=256)]


class CatalogEntry(msgspec.Struct, frozen=True, array_like=True):
    """`["actuator", "float"]` on the wire: kind (sensor | actuator | attribute, or what the
    databroker calls it) and VSS datatype."""

    kind: Annotated[str, msgspec.Meta(max_length=32)]
    datatype: Annotated[str, msgspec.Meta(max_length=32)] = ""


Catalog = Mapping[str, CatalogEntry]


def catalog_digest(signals: Catalog) -> str:
    """sha256 of the canonical catalogue (sorted paths): equal catalogues, equal digests, on any
    device — so a fleet of one vehicle model shares one."""
    canonical = msgspec.json.encode(dict(sorted(signals.items())))
    return hashlib.sha256(canonical).hexdigest()
