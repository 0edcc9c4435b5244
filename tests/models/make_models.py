"""Write the LightGBM model files the compiled-model oracle tests run on (deterministically).

    .venv/bin/python tests/models/make_models.py     # rewrites tests/models/*.txt

Each model stresses one way a compiler can disagree with LightGBM:

=====================  =====================================================================
``binary_nan``         NaN in training data (missing type NaN, both default sides); a feature
                       that is mostly exact zeros (thresholds at ±1e-35)
``categorical``        categorical splits (bitsets), incl. a high-cardinality merchant code
``deep_many_trees``    many trees with deep leaf-wise branches (long paths, many units)
``single_tree``        one tree
``amounts``            a probability that rises almost linearly with log(amount): many
                       thresholds on one wide-range feature (cents to millions)
``zero_as_missing``    ``zero_as_missing=True`` (missing type Zero), which treelite lacks
``no_missing``         ``use_missing=False`` (missing type None: NaN scores as 0.0)
``constant``           a model trained on a constant label (trees that are a single leaf)
=====================  =====================================================================

The files are committed (small: well under 1 MB together) so the tests do not train; this script
says how they were made. Retraining with another LightGBM version may change them — that is fine,
the tests compare against whichever LightGBM loads them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightgbm as lgb
import numpy as np

HERE = Path(__file__).resolve().parent

BASE_PARAMS = {
    "objective": "binary",
    "verbose": -1,
    "seed": 7,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 1,
    "learning_rate": 0.1,
}


def _labels(rng: np.random.Generator, logit: np.ndarray) -> np.ndarray:
    return (rng.random(logit.shape[0]) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int32)


def binary_nan() -> lgb.Booster:
    rng = np.random.default_rng(1)
    n = 4000
    X = rng.normal(size=(n, 8))
    X[:, 5] = np.where(rng.random(n) < 0.7, 0.0, rng.normal(size=n))  # mostly zeros
    X[:, 6] = rng.exponential(size=n)
    logit = 1.5 * X[:, 0] - X[:, 1] + np.where(X[:, 5] > 0, 1.0, -0.5) + 0.3 * X[:, 6] - 1.0
    y = _labels(rng, logit)
    X[rng.random(X.shape) < 0.12] = np.nan  # NaN everywhere, after the labels are drawn
    X[rng.random(n) < 0.3, 2] = np.nan
    params = {**BASE_PARAMS, "num_leaves": 15}
    return lgb.train(params, lgb.Dataset(X, y), num_boost_round=30)


def categorical() -> lgb.Booster:
    rng = np.random.default_rng(2)
    n = 5000
    X = rng.normal(size=(n, 6))
    X[:, 0] = rng.integers(0, 12, n)  # channel-like, few categories
    X[:, 1] = rng.integers(0, 300, n)  # merchant-category-like, many categories
    risky = np.isin(X[:, 1], rng.choice(300, 40, replace=False))
    logit = np.where(np.isin(X[:, 0], [0, 3, 7]), 1.2, -0.8) + 1.5 * risky + 0.5 * X[:, 2] - 1
    y = _labels(rng, logit)
    X[rng.random(n) < 0.05, 0] = np.nan
    X[rng.random(n) < 0.05, 1] = np.nan
    params = {
        **BASE_PARAMS,
        "num_leaves": 15,
        "min_data_per_group": 10,
        "cat_smooth": 5,
        "max_cat_to_onehot": 4,
    }
    return lgb.train(params, lgb.Dataset(X, y, categorical_feature=[0, 1]), num_boost_round=25)


def deep_many_trees() -> lgb.Booster:
    rng = np.random.default_rng(3)
    n = 6000
    X = rng.normal(size=(n, 12))
    logit = np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2] + np.abs(X[:, 3]) - 1 + 0.5 * X[:, 4] ** 2
    y = _labels(rng, logit)
    X[rng.random(X.shape) < 0.03] = np.nan
    params = {**BASE_PARAMS, "num_leaves": 40, "min_data_in_leaf": 5, "learning_rate": 0.05}
    return lgb.train(params, lgb.Dataset(X, y), num_boost_round=90)


def single_tree() -> lgb.Booster:
    rng = np.random.default_rng(4)
    n = 2000
    X = rng.normal(size=(n, 4))
    y = _labels(rng, 2 * X[:, 0] - X[:, 1])
    X[rng.random(X.shape) < 0.1] = np.nan
    return lgb.train({**BASE_PARAMS, "num_leaves": 20}, lgb.Dataset(X, y), num_boost_round=1)


def amounts() -> lgb.Booster:
    rng = np.random.default_rng(5)
    n = 8000
    amount = np.round(np.exp(rng.normal(3.5, 2.0, n)), 2)  # cents to ~1e6
    hour = rng.integers(0, 24, n).astype(float)
    count_1h = rng.poisson(1.0, n).astype(float)
    X = np.column_stack([amount, hour, count_1h])
    y = _labels(rng, 0.8 * (np.log(amount) - 5.0) + 0.3 * count_1h)
    params = {**BASE_PARAMS, "num_leaves": 31, "max_bin": 1023, "min_data_in_leaf": 5}
    return lgb.train(params, lgb.Dataset(X, y), num_boost_round=40)


def zero_as_missing() -> lgb.Booster:
    rng = np.random.default_rng(6)
    n = 4000
    X = rng.normal(size=(n, 5))
    X[rng.random(X.shape) < 0.3] = 0.0
    X[rng.random(X.shape) < 0.05] = np.nan
    y = _labels(rng, np.nan_to_num(X[:, 0]) * 2 + (X[:, 1] == 0) - 0.5)
    params = {**BASE_PARAMS, "num_leaves": 12, "zero_as_missing": True}
    return lgb.train(params, lgb.Dataset(X, y), num_boost_round=20)


def no_missing() -> lgb.Booster:
    rng = np.random.default_rng(7)
    n = 3000
    X = rng.normal(size=(n, 5))
    y = _labels(rng, X[:, 0] - X[:, 2])
    X[rng.random(X.shape) < 0.05] = np.nan
    params = {**BASE_PARAMS, "num_leaves": 10, "use_missing": False}
    return lgb.train(params, lgb.Dataset(X, y), num_boost_round=15)


def constant() -> lgb.Booster:
    rng = np.random.default_rng(8)
    X = rng.normal(size=(200, 3))
    y = np.zeros(200, dtype=np.int32)
    y[:5] = 1  # LightGBM needs both classes; nothing separates them, so no split is found
    params = {**BASE_PARAMS, "num_leaves": 4, "min_data_in_leaf": 150}
    return lgb.train(params, lgb.Dataset(X, y), num_boost_round=3)


MODELS: dict[str, Callable[[], lgb.Booster]] = {
    "binary_nan": binary_nan,
    "categorical": categorical,
    "deep_many_trees": deep_many_trees,
    "single_tree": single_tree,
    "amounts": amounts,
    "zero_as_missing": zero_as_missing,
    "no_missing": no_missing,
    "constant": constant,
}


def main() -> None:
    total = 0
    for name, make in MODELS.items():
        path = HERE / f"{name}.txt"
        make().save_model(path)
        size = path.stat().st_size
        total += size
        print(f"{path.name:24s} {size / 1024:8.1f} KiB")
    print(f"{'total':24s} {total / 1024:8.1f} KiB")


if __name__ == "__main__":
    main()
