"""Reason codes: TreeSHAP and decision-path contributions, both held to LightGBM itself.

TreeSHAP (``scoring.tree_shap``) must equal LightGBM's ``pred_contrib`` value for value, and the
path kernel contributions plus bias must equal
``booster.predict(X, raw_score=True)`` for every model in ``tests/models`` (categorical splits,
NaN, zero-as-missing, no-missing, constant and deep trees) on inputs full of NaN, zeros, values
around LightGBM's zero threshold, negatives, infinities and unseen categories. Per tree the
contributions telescope to the value of the leaf reached, so a single wrong turn shows up as a
leaf-sized error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from scoring.decision import DecisionPolicy
from scoring.logs import TIMESTAMP
from scoring.path_contrib import PathModel, path_contributions, prepare
from scoring.pipeline import BatchScorer
from scoring.reasons import contributions, lightgbm_shap, top_reasons
from scoring.records import Decision
from scoring.settings import ScoringSettings, Settings
from scoring.tree_shap import ShapModel, shap_contributions
from scoring.tree_shap import prepare as prepare_shap

MODELS = Path(__file__).resolve().parent / "models"
MODEL_FILES = sorted(MODELS.glob("*.txt"))
ZERO = float(np.float32(1e-35))  # LightGBM's kZeroThreshold

# Values the decision rules treat specially: zero and LightGBM's zero threshold, the categorical
# cast (negative, fractional, beyond int range), infinities.
SPECIAL = np.array(
    [
        0.0,
        -0.0,
        1e-36,
        -1e-36,
        ZERO,
        -ZERO,
        2e-35,
        -2e-35,
        -0.5,
        -0.999,
        -1.0,
        -3.0,
        0.5,
        2.7,
        12.0,  # categorical model: unseen channel
        299.0,
        300.0,  # categorical model: unseen merchant category
        1023.0,
        2147483647.0,
        2147483648.0,
        3e9,
        1e10,
        np.inf,
        -np.inf,
    ]
)

PARAMS = {"objective": "binary", "verbose": -1, "num_threads": 1, "deterministic": True}


def _booster(path: Path) -> lgb.Booster:
    return lgb.Booster(model_file=str(path))


def _hostile_inputs(rng: np.random.Generator, rows: int, columns: int) -> np.ndarray:
    """Normal values at several scales, with NaN, zeros, special values and small integers."""
    X = rng.normal(size=(rows, columns)) * rng.choice([0.3, 1.0, 5.0, 1000.0], size=(rows, 1))
    pick = rng.random((rows, columns))
    X[pick < 0.12] = np.nan
    X[(pick >= 0.12) & (pick < 0.22)] = 0.0
    special = (pick >= 0.22) & (pick < 0.32)
    X[special] = rng.choice(SPECIAL, size=int(special.sum()))
    integers = (pick >= 0.32) & (pick < 0.55)  # categories, seen and unseen
    X[integers] = rng.integers(-2, 400, size=int(integers.sum()))
    return X


def _assert_sums_to_raw_score(booster: lgb.Booster, X: np.ndarray) -> None:
    contrib = path_contributions(booster, X)
    assert contrib.shape == (len(X), booster.num_feature() + 1)
    raw = booster.predict(X, raw_score=True)
    np.testing.assert_allclose(contrib.sum(axis=1), raw, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------------------------
# Path contributions walk LightGBM's own path
# ------------------------------------------------------------------------------------------------


def test_the_model_folder_covers_what_the_kernel_must_replicate() -> None:
    dumps = [_booster(p).dump_model() for p in MODEL_FILES]
    nodes: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        if "split_feature" in node:
            nodes.append(node)
            walk(node["left_child"])
            walk(node["right_child"])

    for dump in dumps:
        for tree in dump["tree_info"]:
            walk(tree["tree_structure"])
    assert {n["decision_type"] for n in nodes} == {"<=", "=="}
    assert {n["missing_type"] for n in nodes} == {"None", "Zero", "NaN"}
    assert {n["default_left"] for n in nodes if n["decision_type"] == "<="} == {True, False}
    assert any(  # single-leaf trees (the constant model)
        "split_feature" not in t["tree_structure"] for d in dumps for t in d["tree_info"]
    )


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_path_contributions_plus_bias_are_lightgbms_raw_score(path: Path) -> None:
    booster = _booster(path)
    rng = np.random.default_rng(sum(path.stem.encode()))
    _assert_sums_to_raw_score(booster, _hostile_inputs(rng, 4000, booster.num_feature()))
    _assert_sums_to_raw_score(booster, _special_rows(booster.num_feature()))


def _special_rows(columns: int, every: int = 1) -> np.ndarray:
    """Every ``every``-th special value in every column, one row each, the others NaN; and each
    special value in all columns at once (with the all-NaN row)."""
    rows = [np.full(columns, v) for v in [*SPECIAL, np.nan]]
    for column in range(columns):
        for v in SPECIAL[::every]:
            row = np.full(columns, np.nan)
            row[column] = v
            rows.append(row)
    return np.array(rows)


_ELEMENT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.floats(min_value=-1e3, max_value=1e3),
    st.integers(min_value=-3, max_value=1100).map(float),
    st.sampled_from(SPECIAL.tolist()),
    st.just(np.nan),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=st.sampled_from(MODEL_FILES),
    data=st.data(),
)
def test_path_contributions_sum_to_the_raw_score_for_any_input(model: Path, data: Any) -> None:
    booster = _cached_booster(model)
    _assert_sums_to_raw_score(booster, _drawn_rows(data, booster.num_feature(), most=20))


def _drawn_rows(data: Any, columns: int, *, most: int) -> np.ndarray:
    return data.draw(
        hnp.arrays(np.float64, st.tuples(st.integers(1, most), st.just(columns)), elements=_ELEMENT)
    )


_BOOSTERS: dict[Path, lgb.Booster] = {}


def _cached_booster(path: Path) -> lgb.Booster:
    if path not in _BOOSTERS:
        _BOOSTERS[path] = _booster(path)
    return _BOOSTERS[path]


def test_float32_input_and_non_contiguous_input_are_read_as_lightgbm_reads_them() -> None:
    booster = _cached_booster(MODELS / "binary_nan.txt")
    X = _hostile_inputs(np.random.default_rng(3), 500, booster.num_feature())
    X[~np.isfinite(X)] = 0.0
    _assert_sums_to_raw_score(booster, X.astype(np.float32).astype(np.float64))
    wide = np.repeat(X, 2, axis=1)[:, ::2]  # a strided view
    np.testing.assert_allclose(
        path_contributions(booster, wide).sum(axis=1),
        booster.predict(X, raw_score=True),
        rtol=1e-9,
        atol=1e-9,
    )


def test_best_iteration_is_used_like_predict_does() -> None:
    """An in-memory booster with early stopping predicts with its best iteration by default."""
    rng = np.random.default_rng(11)
    X = rng.normal(size=(3000, 4))
    y = (X[:, 0] + rng.normal(size=3000) > 0.5).astype(int)
    train, valid = lgb.Dataset(X[:2000], y[:2000]), lgb.Dataset(X[2000:], y[2000:])
    booster = lgb.train(
        {**PARAMS, "learning_rate": 0.3},
        train,
        num_boost_round=200,
        valid_sets=[valid],
        callbacks=[lgb.early_stopping(5, verbose=False)],
        keep_training_booster=True,  # else the booster is cut to best_iteration trees
    )
    assert 0 < booster.best_iteration < booster.num_trees()
    _assert_sums_to_raw_score(booster, X[:200])
    shap = contributions(booster, X[:200], method="shap")
    np.testing.assert_allclose(shap.sum(axis=1), booster.predict(X[:200], raw_score=True))
    _assert_shap_is_lightgbms(booster, X[:200])


def test_random_forest_average_output() -> None:
    rng = np.random.default_rng(12)
    X = rng.normal(size=(2000, 3))
    y = (X[:, 0] - X[:, 2] > 0).astype(int)
    params = {**PARAMS, "boosting": "rf", "bagging_fraction": 0.7, "bagging_freq": 1}
    booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=8)
    assert booster.dump_model()["average_output"]
    X = _hostile_inputs(rng, 500, 3)
    _assert_sums_to_raw_score(booster, X)  # LightGBM's raw score of such a model is not averaged
    shap = contributions(booster, X, method="shap")
    np.testing.assert_allclose(shap.sum(axis=1), booster.predict(X, raw_score=True))
    _assert_shap_is_lightgbms(booster, X)


def test_arrays_are_built_once_per_booster() -> None:
    booster = _booster(MODELS / "single_tree.txt")
    first = prepare(booster)
    assert prepare(booster) is first
    assert isinstance(first, PathModel) and first.num_trees == 1
    with pytest.raises(ValueError, match="X must be"):
        path_contributions(booster, np.zeros((2, booster.num_feature() + 1)))


def test_multiclass_models_are_refused() -> None:
    rng = np.random.default_rng(13)
    X = rng.normal(size=(300, 2))
    y = rng.integers(0, 3, 300)
    params = {**PARAMS, "objective": "multiclass", "num_class": 3}
    booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=2)
    with pytest.raises(ValueError, match="single-output"):
        path_contributions(booster, X)
    with pytest.raises(ValueError, match="single-output"):
        shap_contributions(booster, X)


# ------------------------------------------------------------------------------------------------
# TreeSHAP equals LightGBM's pred_contrib
# ------------------------------------------------------------------------------------------------


def _assert_shap_is_lightgbms(booster: lgb.Booster, X: np.ndarray) -> None:
    expected = lightgbm_shap(booster, X)
    got = shap_contributions(booster, X)
    assert got.shape == expected.shape == (len(X), booster.num_feature() + 1)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-10 * scale)


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_tree_shap_is_lightgbms_pred_contrib(path: Path) -> None:
    booster = _cached_booster(path)
    rng = np.random.default_rng(sum(path.stem.encode()) + 1)
    _assert_shap_is_lightgbms(booster, _hostile_inputs(rng, 1500, booster.num_feature()))
    _assert_shap_is_lightgbms(booster, _special_rows(booster.num_feature(), every=3))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=st.sampled_from(MODEL_FILES), data=st.data())
def test_tree_shap_is_lightgbms_for_any_input(model: Path, data: Any) -> None:
    booster = _cached_booster(model)
    _assert_shap_is_lightgbms(booster, _drawn_rows(data, booster.num_feature(), most=10))


def test_tree_shap_on_deep_trees_with_repeated_features() -> None:
    """Depth 15+ paths that split on the same few features again and again: the one-fraction
    of a feature is the AND of all its splits, its zero-fraction their product, and the
    quadrature must stay exact for the longest paths."""
    rng = np.random.default_rng(21)
    X = rng.normal(size=(6000, 3))
    y = (np.sin(3 * X[:, 0]) + np.cos(2 * X[:, 1]) + 0.2 * rng.normal(size=6000) > 0.3).astype(int)
    params = {**PARAMS, "num_leaves": 255, "max_depth": -1, "min_data_in_leaf": 2}
    booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=5)
    model = prepare_shap(booster)
    assert int(np.diff(model.first).max()) <= 3  # distinct features on a path
    assert max(_depth(t["tree_structure"]) for t in booster.dump_model()["tree_info"]) >= 15
    _assert_shap_is_lightgbms(booster, _hostile_inputs(rng, 300, 3))


def test_tree_shap_stays_exact_on_paths_of_many_distinct_features() -> None:
    """The quadrature's degree grows with the distinct features on a path (up to 21 on the
    champion): a model whose paths hold 16 and more must still match LightGBM."""
    rng = np.random.default_rng(23)
    X = rng.normal(size=(8000, 30))
    y = (np.sin(X * 2).sum(axis=1) + 0.3 * rng.normal(size=8000) > 0).astype(int)
    params = {**PARAMS, "num_leaves": 4000, "min_data_in_leaf": 1, "min_sum_hessian_in_leaf": 0}
    booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=3)
    assert int(np.diff(prepare_shap(booster).first).max()) >= 16
    _assert_shap_is_lightgbms(booster, _hostile_inputs(rng, 200, 30))


def _depth(node: dict[str, Any]) -> int:
    if "split_feature" not in node:
        return 0
    return 1 + max(_depth(node["left_child"]), _depth(node["right_child"]))


def test_tree_shap_tables_are_built_once_per_booster_and_rebuilt_when_it_grows() -> None:
    rng = np.random.default_rng(22)
    X = rng.normal(size=(2000, 4))
    y = (X[:, 0] + X[:, 3] > 0).astype(int)
    booster = lgb.train(PARAMS, lgb.Dataset(X, y), num_boost_round=3, keep_training_booster=True)
    first = prepare_shap(booster)
    assert prepare_shap(booster) is first and isinstance(first, ShapModel)
    booster.update()  # one more tree
    assert prepare_shap(booster) is not first
    _assert_shap_is_lightgbms(booster, X[:50])
    with pytest.raises(ValueError, match="X must be"):
        shap_contributions(booster, np.zeros((2, 5)))


# ------------------------------------------------------------------------------------------------
# top_reasons: both methods, one contract
# ------------------------------------------------------------------------------------------------


def _check_reasons(
    reasons: list[list[dict[str, Any]]], X: np.ndarray, names: list[str], k: int
) -> None:
    assert len(reasons) == len(X)
    for row, row_reasons in zip(X, reasons, strict=True):
        assert len(row_reasons) <= k
        magnitudes = [abs(r["contribution"]) for r in row_reasons]
        assert magnitudes == sorted(magnitudes, reverse=True)
        assert len({r["feature"] for r in row_reasons}) == len(row_reasons)
        for r in row_reasons:
            assert set(r) == {"feature", "value", "contribution"}
            assert isinstance(r["contribution"], float) and r["contribution"] != 0.0
            value = row[names.index(r["feature"])]
            assert r["value"] == (None if np.isnan(value) else float(value))
    json.dumps(reasons)


@pytest.mark.parametrize("method", ["shap", "path"])
def test_top_reasons_structure(method: str) -> None:
    booster = _cached_booster(MODELS / "binary_nan.txt")
    names = booster.feature_name()
    X = _hostile_inputs(np.random.default_rng(5), 200, booster.num_feature())
    X[:, 0] = np.where(np.arange(200) % 3 == 0, np.nan, X[:, 0])  # NaN values get reported too
    reasons = top_reasons(booster, X, names, k=3, method=method)  # type: ignore[arg-type]
    _check_reasons(reasons, X, names, 3)
    assert any(r["value"] is None for row in reasons for r in row)
    assert sum(len(row) == 3 for row in reasons) > 100
    assert top_reasons(booster, X[:0], names, method=method) == []  # type: ignore[arg-type]


def test_the_methods_give_the_same_structure_and_zero_contributions_are_dropped() -> None:
    constant = _cached_booster(MODELS / "constant.txt")
    X = np.random.default_rng(6).normal(size=(5, constant.num_feature()))
    names = constant.feature_name()
    for method in ("shap", "path"):
        assert top_reasons(constant, X, names, method=method) == [[]] * 5  # type: ignore[arg-type]

    booster = _cached_booster(MODELS / "categorical.txt")
    names = booster.feature_name()
    X = _hostile_inputs(np.random.default_rng(7), 100, booster.num_feature())
    shap = top_reasons(booster, X, names, method="shap")
    path = top_reasons(booster, X, names, method="path")
    _check_reasons(shap, X, names, 5)
    _check_reasons(path, X, names, 5)


def test_unknown_method_is_refused() -> None:
    booster = _cached_booster(MODELS / "single_tree.txt")
    X = np.zeros((1, booster.num_feature()))
    with pytest.raises(ValueError, match="unknown reasons method"):
        top_reasons(booster, X, booster.feature_name(), method="lime")  # type: ignore[arg-type]


def test_lightgbms_reference_runs_single_threaded(monkeypatch: pytest.MonkeyPatch) -> None:
    booster = _booster(MODELS / "single_tree.txt")
    seen: dict[str, Any] = {}
    original = booster.predict

    def spy(X: np.ndarray, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return original(X, **kwargs)

    monkeypatch.setattr(booster, "predict", spy)
    lightgbm_shap(booster, np.zeros((2, booster.num_feature())))
    assert seen["pred_contrib"] is True and seen["num_threads"] == 1
    seen.clear()
    top_reasons(booster, np.zeros((2, booster.num_feature())), booster.feature_name())
    assert seen == {}  # the reasons themselves come from scoring.tree_shap


def test_shap_and_path_agree_on_a_stump() -> None:
    """One split: both methods must credit that feature alone, with the same sign."""
    rng = np.random.default_rng(8)
    X = rng.normal(size=(4000, 3))
    y = (X[:, 1] + 0.3 * rng.normal(size=4000) > 0.4).astype(int)
    params = {**PARAMS, "num_leaves": 2, "boost_from_average": False}
    booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=1)
    assert booster.dump_model()["tree_info"][0]["num_leaves"] == 2
    names = ["a", "b", "c"]
    rows = np.array([[0.0, -2.0, 0.0], [0.0, 2.0, 0.0], [5.0, -1.5, -5.0], [-5.0, 3.0, 5.0]])
    shap = contributions(booster, rows, method="shap")
    path = contributions(booster, rows, method="path")
    for method in (shap, path):
        assert np.all(method[:, [0, 2]] == 0.0)
    assert np.all(np.sign(shap[:, 1]) == np.sign(path[:, 1]))
    assert np.all(np.sign(path[:, 1]) == [-1, 1, -1, 1])
    for method in ("shap", "path"):
        reasons = top_reasons(booster, rows, names, method=method)  # type: ignore[arg-type]
        assert [[r["feature"] for r in row] for row in reasons] == [["b"]] * 4


# ------------------------------------------------------------------------------------------------
# The setting and the scorer
# ------------------------------------------------------------------------------------------------


def test_reasons_method_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ScoringSettings().reasons_method == "shap"
    monkeypatch.setenv("FRAUD_SCORING__REASONS_METHOD", "path")
    assert Settings().scoring.reasons_method == "path"
    monkeypatch.setenv("FRAUD_SCORING__REASONS_METHOD", "lime")
    with pytest.raises(ValueError, match="reasons_method"):
        Settings()


class _AmountModel:
    """A model version backed by a LightGBM booster whose first feature (amount) decides."""

    version = "v-reasons"

    def __init__(self) -> None:
        from scoring.features import FEATURE_NAMES

        self.feature_names = list(FEATURE_NAMES)
        rng = np.random.default_rng(1)
        X = rng.normal(size=(3000, len(FEATURE_NAMES)))
        X[:, 0] = rng.lognormal(3, 1.5, size=3000)  # feature 0 is the amount
        y = (X[:, 0] > 500).astype(int)
        self.booster = lgb.train(PARAMS, lgb.Dataset(X, y), num_boost_round=10)

    def score_many(self, X: np.ndarray) -> np.ndarray:
        return self.booster.predict(X)


def test_batch_scorer_uses_the_configured_method() -> None:
    from scoring.features import FeatureEngine

    batch = pa.table(
        {
            "transaction_id": ["t1", "t2", "t3"],
            "card_id": ["c1", "c2", "c1"],
            "bank_id": ["b1", "b1", None],
            "timestamp": pa.array([1_000, 2_000, 3_000], pa.int64()).cast(TIMESTAMP),
            "amount": [20.0, 900.0, 950.0],
        }
    )
    model = _AmountModel()
    out = {}
    for method in ("shap", "path"):
        scorer = BatchScorer(model, DecisionPolicy(), engine=FeatureEngine(), reasons_method=method)  # type: ignore[arg-type]
        decisions = [Decision.model_validate(r) for r in scorer.score(batch).records()]
        flagged = [d for d in decisions if d.action != "approve"]
        assert flagged and all(d.reasons and d.reasons[0].feature == "amount" for d in flagged)
        out[method] = decisions
    assert [d.action for d in out["shap"]] == [d.action for d in out["path"]]
    assert BatchScorer(model).reasons_method == "shap"
    with pytest.raises(ValueError, match="reasons_method"):
        BatchScorer(model, reasons_method="lime")  # type: ignore[arg-type]
