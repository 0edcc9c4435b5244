"""``fraudstream train``: point-in-time features, a time-validated LightGBM fit, a new registry
version. The pieces: :mod:`training.dataset` builds the rows, :mod:`training.fit` fits,
:class:`scoring.registry.ModelRegistry` compiles and stores."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from scoring.drift import reference_from
from scoring.features import FEATURE_NAMES, EngineConfig
from scoring.registry import ModelManifest, ModelRegistry
from training.dataset import build_training_set
from training.fit import fit


def train_and_register(
    transactions: pa.Table,
    labels: pa.Table,
    *,
    registry: ModelRegistry,
    start: datetime | None = None,
    until: datetime | None = None,
    seed: int = 7,
    parent: str | None = None,
    engine_config: EngineConfig | None = None,
    on_step: Callable[[str], None] = lambda _s: None,
) -> ModelManifest:
    on_step("replaying the log through the feature engine")
    data = build_training_set(transactions, labels, start=start, until=until,
                              engine_config=engine_config)  # fmt: skip
    on_step(f"fitting LightGBM on {len(data.y):,} transactions ({int(data.y.sum()):,} frauds)")
    result = fit(data.X, data.y, data.timestamp_ms, feature_names=list(FEATURE_NAMES), seed=seed)
    on_step("compiling and registering")
    metrics: dict[str, float] = {
        **{f"validation_{k}": v for k, v in result.validation.items()},
        "train_rows": float(len(data.y)),
        "train_frauds": float(data.y.sum()),
    }
    params: dict[str, Any] = {**result.params, "num_trees": result.num_trees, "grid": result.grid}
    # What serving compares live traffic with (scoring/drift.py): the training rows' distribution.
    train_scores = np.asarray(result.booster.predict(data.X, num_threads=1), dtype=np.float64)
    params["drift_reference"] = reference_from(data.X, train_scores, list(FEATURE_NAMES))
    return registry.register(
        result.booster,
        feature_names=list(FEATURE_NAMES),
        params=params,
        metrics=metrics,
        window=(start, until),
        parent=parent,
    )
