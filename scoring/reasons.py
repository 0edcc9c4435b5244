"""Reason codes: the features that pushed a score up or down most (LightGBM ``pred_contrib``).

Contributions are SHAP values in log-odds; they sum with the bias to the model's raw score. Only
review and decline decisions carry reasons, so the (slower) contribution pass runs on those rows
only.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightgbm as lgb
import numpy as np


def top_reasons(
    booster: lgb.Booster, X: np.ndarray, feature_names: Sequence[str], *, k: int = 5
) -> list[list[dict[str, float | str | None]]]:
    """For each row of ``X``, the ``k`` largest contributions by absolute value, signed."""
    if len(X) == 0:
        return []
    contrib = np.asarray(booster.predict(X, pred_contrib=True))[:, :-1]  # last column: bias
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
