"""Reason codes: the features that pushed a score up or down most.

Two ways to split a row's raw score (log-odds) into per-feature contributions; with the bias, both
sum to the model's raw score. Only review and decline decisions carry reasons, so the
contribution pass runs on those rows only.

* ``"shap"`` (default): exact TreeSHAP — Shapley values, the usual basis of adverse-action reason
  codes — computed by :mod:`scoring.tree_shap`: the values of LightGBM's ``pred_contrib`` (held
  equal to it by the tests) at about a third of its cost, ~2 ms per row on the 343-tree champion
  against LightGBM's ~5.5 ms (benchmarks/reason_codes.py).
* ``"path"``: decision-path contributions (:mod:`scoring.path_contrib`) — each split on the row's
  path credits its feature with the change of the node value. An exact decomposition of the raw
  score but not Shapley values; costs about as much as scoring the row (~20 µs on that model).

Both use the trees ``Booster.predict`` uses by default (for a registry model: every tree in its
model text, which is what the compiled scorer runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from scoring.path_contrib import num_iteration, path_contributions
from scoring.path_contrib import prepare as prepare_paths
from scoring.tree_shap import prepare as prepare_shap
from scoring.tree_shap import shap_contributions

ReasonsMethod = Literal["shap", "path"]
REASONS_METHODS: tuple[ReasonsMethod, ...] = ("shap", "path")


def contributions(
    booster: lgb.Booster, X: np.ndarray, *, method: ReasonsMethod = "shap"
) -> npt.NDArray[np.float64]:
    """``(rows, features + 1)`` contributions in log-odds, the bias in the last column."""
    if method == "shap":
        return shap_contributions(booster, X)
    if method == "path":
        return path_contributions(booster, X)
    raise ValueError(f"unknown reasons method {method!r}; expected one of {REASONS_METHODS}")


def lightgbm_shap(booster: lgb.Booster, X: np.ndarray) -> npt.NDArray[np.float64]:
    """LightGBM's own TreeSHAP (``pred_contrib``): the reference :mod:`scoring.tree_shap` is held
    to, and its baseline in benchmarks/reason_codes.py. ``num_threads=1``: left to itself
    LightGBM starts an OpenMP team for every call, which for a few rows costs more in start-up and
    spinning than it saves; results do not depend on the thread count."""
    return np.asarray(
        booster.predict(X, pred_contrib=True, num_iteration=num_iteration(booster), num_threads=1),
        dtype=np.float64,
    )


def prepare(booster: lgb.Booster, method: ReasonsMethod) -> None:
    """Build the method's per-model arrays now rather than on the first flagged row (~0.1-0.3 s
    for a few hundred trees)."""
    if method == "shap":
        prepare_shap(booster)
    elif method == "path":
        prepare_paths(booster)


def top_reasons(
    booster: lgb.Booster,
    X: np.ndarray,
    feature_names: Sequence[str],
    *,
    k: int = 5,
    method: ReasonsMethod = "shap",
) -> list[list[dict[str, float | str | None]]]:
    """For each row of ``X``, the ``k`` largest contributions by absolute value, signed.

    Each reason is ``{"feature", "value" (None for NaN), "contribution"}``; contributions that are
    exactly zero are left out, so a row may have fewer than ``k``.
    """
    if len(X) == 0:
        return []
    contrib = contributions(booster, X, method=method)[:, :-1]  # last column: bias
    order = np.argsort(-np.abs(contrib), axis=1, kind="stable")[:, :k]
    out = []
    for row, columns in enumerate(order):
        out.append(
            [
                {
                    "feature": feature_names[c],
                    "value": None if np.isnan(X[row, c]) else float(X[row, c]),
                    "contribution": float(contrib[row, c]),
                }
                for c in columns
                if contrib[row, c] != 0.0
            ]
        )
    return out
