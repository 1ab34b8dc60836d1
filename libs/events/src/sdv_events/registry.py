"""Event types registered by stable name + version (`registry.DeviceAccepted.v1`), never class paths.

Old versions stay decodable through upcasters: a function from the old body (as a dict) to the
next version's body, chained until a registered version is reached.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

S = TypeVar("S", bound=type[msgspec.Struct])
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def type_name(name: str, version: int) -> str:
    return f"{name}.v{version}"


@functools.lru_cache(maxsize=1024)  # the types of the suite: a few dozen
def short_name(full_type: str) -> str:
    """`registry.DeviceAccepted.v1` → `DeviceAccepted` (the subject's last token)."""
    parts = full_type.split(".")
    return parts[-2] if len(parts) >= 3 else parts[0]


class EventRegistry:
    def __init__(self) -> None:
        self._classes: dict[str, type[msgspec.Struct]] = {}
        self._names: dict[type[msgspec.Struct], tuple[str, int]] = {}
        self._upcasters: dict[str, tuple[str, Upcaster]] = {}

    def register(self, cls: type[msgspec.Struct], name: str, version: int) -> None:
        full = type_name(name, version)
        known = self._classes.get(full)
        if known is not None and known is not cls:
            raise ValueError(f"event type {full!r} already registered by {known.__qualname__}")
        self._classes[full] = cls
        self._names[cls] = (full, version)

    def add_upcaster(self, old: str, new: str, fn: Upcaster) -> None:
        self._upcasters[old] = (new, fn)

    def describe(self, body: msgspec.Struct) -> tuple[str, int]:
        try:
            return self._names[type(body)]
        except KeyError:
            raise TypeError(f"{type(body).__qualname__} is not a registered event type") from None

    def resolve(self, full_type: str) -> tuple[type[msgspec.Struct], list[Upcaster]] | None:
        """The class to decode into and the upcasters to apply first (empty when current)."""
        cls = self._classes.get(full_type)
        if cls is not None:  # the common case: a current type, no chain to walk
            return cls, []
        chain: list[Upcaster] = []
        seen = set()
        current = full_type
        while current not in self._classes:
            step = self._upcasters.get(current)
            if step is None or current in seen:
                return None
            seen.add(current)
            current, fn = step
            chain.append(fn)
        return self._classes[current], chain

    def names(self) -> list[str]:
        return sorted(self._classes)


default_registry = EventRegistry()


def event(name: str, version: int = 1, *, registry: EventRegistry = default_registry) -> Callable[[S], S]:
    """Class decorator: `@event("orchestrator.RolloutStarted")` registers a body Struct."""

    def decorate(cls: S) -> S:
        registry.register(cls, name, version)
        return cls

    return decorate


def upcaster(
    old: str, new: str, *, registry: EventRegistry = default_registry
) -> Callable[[Upcaster], Upcaster]:
    def decorate(fn: Upcaster) -> Upcaster:
        registry.add_upcaster(old, new, fn)
        return fn

    return decorate
