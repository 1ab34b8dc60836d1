"""One runner for every consumer of the bus: processors name their subjects and handle events;
the rules of delivery live in `runner.py` (read them there)."""

from sdv_events.processing.processor import (
    AppliesBatches,
    Processor,
    Projection,
    SeedsShadow,
    WithSideEffects,
)
from sdv_events.processing.rebuild import ConsumerBusy, Rebuilt
from sdv_events.processing.runner import ConsumerRunner
from sdv_events.processing.sources import HistorySource, OwnThenHistory, StoreSource, StreamSource

__all__ = [
    "AppliesBatches",
    "ConsumerBusy",
    "ConsumerRunner",
    "HistorySource",
    "OwnThenHistory",
    "Processor",
    "Projection",
    "Rebuilt",
    "SeedsShadow",
    "StoreSource",
    "StreamSource",
    "WithSideEffects",
]
