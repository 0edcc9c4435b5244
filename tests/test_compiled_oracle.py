"""The compiled model gives LightGBM's own probabilities: |Δ| ≤ 1e-6 (DESIGN §5), observed 0.

LightGBM (``Booster.predict``) is the oracle; every model file in ``tests/models`` is compiled and
scored on rows full of what breaks tree compilers: NaN, ±inf, ±0, values at and next to every
threshold, ±1e-35 (LightGBM's zero threshold), huge and subnormal values, doubles whose low
32 bits are all ones (tl2cgen's missing flag), negative fractions for categorical features.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scoring.compiled as compiled_mod
from scoring.compiled import (
    FEATURE_CATEGORICAL,
    LIGHTGBM_ZERO_THRESHOLD,
    CompiledModel,
    ModelCompileError,
    ModelIntegrityError,
    compile_model,
    file_sha256,
    inspect_lightgbm_model,
)

MODELS_DIR = Path(__file__).parent / "models"
MODEL_NAMES = sorted(p.stem for p in MODELS_DIR.glob("*.txt"))
CONTRACT_ATOL = 1e-6  # DESIGN §5
# What we observe and want to keep: float64 thresholds and leaves, LightGBM's summation order.
OBSERVED_ATOL = 1e-12

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # float32 casts of 1e300


def test_the_model_folder_is_populated() -> None:
    assert {"binary_nan", "categorical", "single_tree", "zero_as_missing"} <= set(MODEL_NAMES)


# ----------------------------------------------------------------------------------- helpers


def model_path(name: str) -> Path:
    return MODELS_DIR / f"{name}.txt"


def numeric_thresholds(text: str) -> np.ndarray:
    values: list[float] = []
    for thresholds, decisions in zip(
        re.findall(r"^threshold=(.*)$", text, re.M),
        re.findall(r"^decision_type=(.*)$", text, re.M),
        strict=True,
    ):
        for t, d in zip(thresholds.split(), decisions.split(), strict=True):
            if not int(d) & 1:
                values.append(float(t))
    return np.unique(np.array(values or [0.0]))


def low_word_all_ones(values: np.ndarray) -> np.ndarray:
    """Finite doubles whose low 32 bits read as tl2cgen's ``missing == -1`` flag."""
    bits = np.asarray(values, dtype=np.float64).view(np.uint64) | np.uint64(0xFFFFFFFF)
    out = bits.view(np.float64)
    return out[np.isfinite(out)]


SPECIALS = np.array(
    [
        np.nan,
        np.inf,
        -np.inf,
        0.0,
        -0.0,
        LIGHTGBM_ZERO_THRESHOLD,
        -LIGHTGBM_ZERO_THRESHOLD,
        1e-36,
        -1e-36,
        5e-324,
        -5e-324,
        1e300,
        -1e300,
        1.7976931348623157e308,
        3.4e38,
        -3.4e38,
        2.0**31,
        1e10,
    ]
)


def adversarial_rows(name: str, n: int, seed: int = 0) -> np.ndarray:
    text = model_path(name).read_text()
    info = inspect_lightgbm_model(text)
    rng = np.random.default_rng(seed)
    nf = info.num_features
    X = rng.normal(size=(n, nf)) * rng.choice([1.0, 10.0, 1e3, 1e6], size=(n, nf))
    t = numeric_thresholds(text)
    pool = np.concatenate(
        [
            SPECIALS,
            t,
            np.nextafter(t, np.inf),
            np.nextafter(t, -np.inf),
            low_word_all_ones(t),
            low_word_all_ones(rng.normal(size=64)),
        ]
    )
    mask = rng.random(X.shape) < 0.45
    X[mask] = rng.choice(pool, size=int(mask.sum()))
    for j, kind in enumerate(info.feature_kinds):
        if kind == FEATURE_CATEGORICAL:
            cats = rng.integers(-3, 310, n).astype(float)
            frac = rng.choice([0.0, 0.0, 0.5, -0.5, -0.999, 0.999], size=n)
            col = cats + frac
            special = rng.random(n) < 0.2
            col[special] = rng.choice(SPECIALS, size=int(special.sum()))
            X[:, j] = col
    return X


def lightgbm_predict(name: str, X: np.ndarray) -> np.ndarray:
    return np.asarray(booster(name).predict(X, num_threads=1), dtype=np.float64)


_boosters: dict[str, lgb.Booster] = {}


def booster(name: str) -> lgb.Booster:
    if name not in _boosters:
        _boosters[name] = lgb.Booster(model_file=str(model_path(name)))
    return _boosters[name]


def assert_oracle(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == np.float64
    assert actual.shape == expected.shape
    diff = np.abs(actual - expected)
    worst = int(np.argmax(diff)) if diff.size else 0
    assert diff.size == 0 or diff.max() <= CONTRACT_ATOL, (
        f"max |Δ| {diff.max()} at row {worst}: {actual[worst]} vs {expected[worst]}"
    )
    assert diff.size == 0 or diff.max() <= OBSERVED_ATOL


class Built:
    """Compiled libraries, built once per session per (model, options)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache: dict[tuple[str, tuple[tuple[str, Any], ...]], tuple[Path, str]] = {}

    def build(self, name: str, **options: Any) -> tuple[Path, str]:
        key = (name, tuple(sorted(options.items())))
        if key not in self.cache:
            lib = self.root / f"{name}-{len(self.cache)}.so"
            info = compile_model(model_path(name), lib, **options)
            self.cache[key] = (lib, info.lib_sha256)
        return self.cache[key]

    def load(self, name: str, **options: Any) -> CompiledModel:
        lib, sha = self.build(name, **options)
        n = inspect_lightgbm_model(model_path(name).read_text()).num_features
        model = CompiledModel.load(lib, expected_sha256=sha, num_features=n)
        # Fails if the native path did not load: a silent GTIL fallback would pass the oracle.
        assert model.engine == "tl2cgen"
        return model


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return Built(tmp_path_factory.mktemp("compiled"))


# ------------------------------------------------------------------------------- the oracle


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_score_many_equals_lightgbm(built: Built, name: str) -> None:
    model = built.load(name)
    X = adversarial_rows(name, 3000)
    assert_oracle(model.score_many(X), lightgbm_predict(name, X))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_float32_rows_equal_lightgbm_on_float32(built: Built, name: str) -> None:
    model = built.load(name)
    X32 = adversarial_rows(name, 2000, seed=1).astype(np.float32)
    assert_oracle(model.score_many(X32), lightgbm_predict(name, X32))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_score_one_equals_lightgbm(built: Built, name: str) -> None:
    model = built.load(name)
    X = adversarial_rows(name, 300, seed=2)
    one = np.array([model.score_one(row) for row in X])
    assert_oracle(one, lightgbm_predict(name, X))
    assert isinstance(model.score_one(X[0]), float)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_gtil_fallback_equals_lightgbm(name: str) -> None:
    model = CompiledModel.from_gtil(model_path(name))
    assert model.engine == "gtil"
    X = adversarial_rows(name, 1500, seed=3)
    expected = lightgbm_predict(name, X)
    assert_oracle(model.score_many(X), expected)
    assert abs(model.score_one(X[0]) - expected[0]) <= CONTRACT_ATOL


@pytest.mark.slow
@pytest.mark.parametrize("name", ["binary_nan", "categorical", "zero_as_missing"])
@pytest.mark.parametrize(
    "options",
    [
        {"optimize": False},  # tl2cgen's code as generated (union missing flag)
        {"quantize": True},
        {"branch_free_max_splits": 0},
        {"branch_free_max_splits": 15},
        {"trees_per_unit": 1, "block_rows": 1},
        {"trees_per_unit": 1000, "block_rows": 7},
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_every_build_variant_equals_lightgbm(
    built: Built, name: str, options: dict[str, Any]
) -> None:
    model = built.load(name, **options)
    X = adversarial_rows(name, 1500, seed=4)
    if not options.get("optimize", True) or options.get("quantize"):
        # tl2cgen's own code reads the union's missing flag: a double whose low word is
        # 0xFFFFFFFF scores as missing there. That is why the rewrite pass exists.
        low = X.view(np.uint64) & np.uint64(0xFFFFFFFF) == np.uint64(0xFFFFFFFF)
        X[low & np.isfinite(X)] = 1.0
    expected = lightgbm_predict(name, X)
    assert_oracle(model.score_many(X), expected)
    assert_oracle(np.array([model.score_one(r) for r in X[:100]]), expected[:100])


def test_rewritten_code_reads_low_word_all_ones_as_a_value(built: Built) -> None:
    name = "binary_nan"
    t = numeric_thresholds(model_path(name).read_text())
    values = low_word_all_ones(np.concatenate([t, -t]))
    n = inspect_lightgbm_model(model_path(name).read_text()).num_features
    X = np.tile(values[:, None], (1, n))
    assert_oracle(built.load(name).score_many(X), lightgbm_predict(name, X))


def test_stock_tl2cgen_code_misreads_low_word_all_ones(built: Built) -> None:
    """Why the rewrite pass exists; if this starts failing, tl2cgen fixed its missing flag."""
    name = "binary_nan"
    t = numeric_thresholds(model_path(name).read_text())
    values = low_word_all_ones(np.concatenate([t, -t]))
    X = np.tile(values[:, None], (1, 8))
    stock = built.load(name, optimize=False)
    assert np.abs(stock.score_many(X) - lightgbm_predict(name, X)).max() > CONTRACT_ATOL


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_inputs_within_lightgbm_zero_threshold_score_as_zero(built: Built, name: str) -> None:
    # LightGBM drops |x| <= 1e-35 from a row; trees have thresholds at exactly -1e-35.
    model = built.load(name)
    nf = model.num_features
    rng = np.random.default_rng(7)
    X = np.repeat(rng.normal(size=(100, nf)), 4 * nf, axis=0)
    for j in range(nf):
        for k, v in enumerate([-LIGHTGBM_ZERO_THRESHOLD, LIGHTGBM_ZERO_THRESHOLD, -1e-36, -0.0]):
            X[(4 * j + k) :: 4 * nf, j] = v
    assert_oracle(model.score_many(X), lightgbm_predict(name, X))
    assert_oracle(
        model.score_many(X.astype(np.float32)), lightgbm_predict(name, X.astype(np.float32))
    )


def test_code_the_rewrite_pass_does_not_know_is_built_as_generated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(compiled_mod._RewriteError):
        compiled_mod._rewrite_unit_source("void f(void) {}", branch_free_max_splits=1)

    def refuse(source: str, *, branch_free_max_splits: int) -> None:
        raise compiled_mod._RewriteError("unexpected line")

    monkeypatch.setattr(compiled_mod, "_rewrite_unit_source", refuse)
    name = "binary_nan"
    info = compile_model(model_path(name), tmp_path / "x.so")
    assert info.optimize is False
    model = CompiledModel.load(tmp_path / "x.so", expected_sha256=info.lib_sha256, num_features=8)
    assert model.build_info["optimize"] is False
    X = adversarial_rows(name, 500)
    low = X.view(np.uint64) & np.uint64(0xFFFFFFFF) == np.uint64(0xFFFFFFFF)
    X[low & np.isfinite(X)] = 1.0  # tl2cgen's own code misreads those (see above)
    assert_oracle(model.score_many(X), lightgbm_predict(name, X))


# ------------------------------------------------------------------------- property test

_PROPERTY_MODELS = ["binary_nan", "categorical", "zero_as_missing", "amounts"]


def _row_strategy(name: str) -> st.SearchStrategy[list[float]]:
    text = model_path(name).read_text()
    nf = inspect_lightgbm_model(text).num_features
    t = numeric_thresholds(text)
    near = np.concatenate([t, np.nextafter(t, np.inf), np.nextafter(t, -np.inf), SPECIALS])
    value = st.one_of(
        st.floats(allow_nan=True, allow_infinity=True, width=64),
        st.floats(allow_nan=True, allow_infinity=True, width=32),
        st.sampled_from([float(v) for v in near]),
        st.integers(-5, 320).map(float),
        st.integers(-5, 320).map(lambda k: k - 0.5),
    )
    return st.lists(value, min_size=nf, max_size=nf)


@pytest.mark.parametrize("name", _PROPERTY_MODELS)
def test_random_rows_property(built: Built, name: str) -> None:
    model = built.load(name)

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(rows=st.lists(_row_strategy(name), min_size=1, max_size=8))
    def check(rows: list[list[float]]) -> None:
        X = np.array(rows, dtype=np.float64)
        expected = lightgbm_predict(name, X)
        assert_oracle(model.score_many(X), expected)
        assert abs(model.score_one(X[0]) - expected[0]) <= OBSERVED_ATOL

    check()


# ------------------------------------------------------------------------------ integrity


def test_tampered_library_is_refused_before_loading(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib, sha = built.build("single_tree")
    tampered = tmp_path / "tampered.so"
    data = bytearray(lib.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))

    def must_not_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("a library with a bad digest reached the loader")

    monkeypatch.setattr(compiled_mod, "_dlopen_bytes", must_not_load)
    with pytest.raises(ModelIntegrityError, match="SHA-256"):
        CompiledModel.load(tampered, expected_sha256=sha, num_features=4)
    # A mismatch never falls back to GTIL, even when a model file is at hand.
    with pytest.raises(ModelIntegrityError):
        CompiledModel.load(
            tampered, expected_sha256=sha, num_features=4, model_path=model_path("single_tree")
        )


def test_model_file_digest_is_checked_for_gtil(tmp_path: Path) -> None:
    copy = tmp_path / "model.txt"
    shutil.copyfile(model_path("single_tree"), copy)
    with copy.open("a") as fh:
        fh.write("\n")
    with pytest.raises(ModelIntegrityError):
        CompiledModel.from_gtil(copy, expected_sha256=file_sha256(model_path("single_tree")))


def test_unloadable_library_falls_back_to_gtil(tmp_path: Path) -> None:
    junk = tmp_path / "junk.so"
    junk.write_bytes(b"\x7fELF but not really a shared library")
    sha = file_sha256(junk)
    name = "binary_nan"
    with pytest.raises(OSError):
        CompiledModel.load(junk, expected_sha256=sha, num_features=8)
    with pytest.raises(OSError):
        CompiledModel.load(
            junk, expected_sha256=sha, num_features=8, model_path=model_path(name), fallback=False
        )
    model = CompiledModel.load(
        junk, expected_sha256=sha, num_features=8, model_path=model_path(name)
    )
    assert model.engine == "gtil"
    X = adversarial_rows(name, 200)
    assert_oracle(model.score_many(X), lightgbm_predict(name, X))


def test_feature_count_is_checked(built: Built) -> None:
    lib, sha = built.build("single_tree")
    with pytest.raises(ModelIntegrityError, match="features"):
        CompiledModel.load(lib, expected_sha256=sha, num_features=5)


def test_build_info_travels_inside_the_library(built: Built) -> None:
    model = built.load("binary_nan")
    assert model.build_info["cflags"][:1] == ["-O3"]
    assert "-march=native" not in model.build_info["cflags"]
    assert model.build_info["optimize"] is True


# -------------------------------------------------------------------------- input handling


def test_input_layouts_and_dtypes(built: Built) -> None:
    name = "binary_nan"
    model = built.load(name)
    X = adversarial_rows(name, 257, seed=5)
    expected = lightgbm_predict(name, X)
    assert_oracle(model.score_many(np.asfortranarray(X)), expected)
    wide = np.zeros((X.shape[0], X.shape[1] + 3))
    wide[:, 1:-2] = X
    assert_oracle(model.score_many(wide[:, 1:-2]), expected)  # strided rows, no copy
    assert_oracle(model.score_many(X[::-1])[::-1], expected)  # negative stride
    assert_oracle(model.score_many(X.tolist()), expected)
    ints = np.arange(8 * 5).reshape(5, 8) - 10
    assert_oracle(model.score_many(ints), lightgbm_predict(name, ints.astype(np.float64)))
    assert model.score_many(np.empty((0, 8))).shape == (0,)
    assert model.score_one(X[3].tolist()) == pytest.approx(expected[3], abs=OBSERVED_ATOL)
    assert model.score_one(X[3].astype(np.float32)) == pytest.approx(
        lightgbm_predict(name, X[3:4].astype(np.float32))[0], abs=OBSERVED_ATOL
    )
    assert model.score_one(wide[3, 1:-2]) == pytest.approx(expected[3], abs=OBSERVED_ATOL)
    assert model.score_one(X[3].astype(">f8")) == pytest.approx(expected[3], abs=OBSERVED_ATOL)
    assert model.score_one(ints[2]) == pytest.approx(
        lightgbm_predict(name, ints[2:3].astype(np.float64))[0], abs=OBSERVED_ATOL
    )
    before = X.copy()
    model.score_many(X)
    np.testing.assert_array_equal(X, before)  # input not mutated


def test_shape_errors(built: Built) -> None:
    model = built.load("binary_nan")
    with pytest.raises(ValueError):
        model.score_many(np.zeros((3, 7)))
    with pytest.raises(ValueError):
        model.score_many(np.zeros(8))
    with pytest.raises(ValueError):
        model.score_one(np.zeros(9))
    with pytest.raises(ValueError):
        model.score_one(np.zeros((1, 8)))


def test_threads_share_one_model(built: Built) -> None:
    name = "deep_many_trees"
    model = built.load(name)
    X = adversarial_rows(name, 2000, seed=6)
    expected = lightgbm_predict(name, X)
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                results.append(model.score_many(X))
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results:
        assert_oracle(r, expected)


def test_closed_model_refuses_to_score(built: Built) -> None:
    model = built.load("single_tree")
    model.close()
    with pytest.raises(RuntimeError):
        model.score_one(np.zeros(4))


def test_reloading_and_swapping_models_never_aliases(built: Built) -> None:
    # The loader caches libraries by path; every load must still get its own library (hot swap).
    rows = {n: adversarial_rows(n, 300, seed=8) for n in ("binary_nan", "categorical")}
    first = built.load("binary_nan")
    first.close()
    for _ in range(3):
        a, b = built.load("categorical"), built.load("binary_nan")
        for name, model in (("categorical", a), ("binary_nan", b)):
            assert_oracle(model.score_many(rows[name]), lightgbm_predict(name, rows[name]))
        a.close()
        del b  # released by its finalizer


def test_loading_without_memfd(built: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(compiled_mod.os, "memfd_create")
    model = built.load("binary_nan")
    X = adversarial_rows("binary_nan", 300, seed=9)
    assert_oracle(model.score_many(X), lightgbm_predict("binary_nan", X))
    model.close()


# ------------------------------------------------------------------------ what we refuse


def _train(params: dict[str, Any], y: np.ndarray, path: Path) -> Path:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(y.shape[0], 3))
    lgb.train({"verbose": -1, **params}, lgb.Dataset(X, y), num_boost_round=2).save_model(path)
    return path


@pytest.fixture
def unsupported_models(tmp_path: Path) -> Iterator[dict[str, Path]]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    yield {
        "regression": _train({"objective": "regression"}, rng.normal(size=300), tmp_path / "r"),
        "multiclass": _train({"objective": "multiclass", "num_class": 3}, y, tmp_path / "m"),
        "linear": _train({"objective": "binary", "linear_tree": True}, y % 2, tmp_path / "l"),
    }


@pytest.mark.parametrize("kind", ["regression", "multiclass", "linear"])
def test_unsupported_models_are_refused(
    unsupported_models: dict[str, Path], kind: str, tmp_path: Path
) -> None:
    with pytest.raises(ModelCompileError):
        compile_model(unsupported_models[kind], tmp_path / "x.so")
