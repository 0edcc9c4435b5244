"""One feature engine for training and serving (DESIGN.md §4)."""

from scoring.features.catalog import FEATURE_NAMES, NUM_FEATURES
from scoring.features.engine import (
    LABEL_EVENT_SCHEMA,
    EngineConfig,
    FeatureEngine,
    label_effective_ms,
    label_events,
    replay_log,
)

__all__ = [
    "FEATURE_NAMES",
    "LABEL_EVENT_SCHEMA",
    "NUM_FEATURES",
    "EngineConfig",
    "FeatureEngine",
    "label_effective_ms",
    "label_events",
    "replay_log",
]
