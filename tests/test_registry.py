"""Model registry: immutable versions, aliases with rollback, digests checked before loading."""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
from pydantic import ValidationError

import scoring.compiled as compiled_mod
from scoring.compiled import ModelCompileError, ModelIntegrityError
from scoring.registry import (
    LocalStorage,
    ModelManifest,
    ModelRegistry,
    RegistryError,
    TrainingWindow,
    UnknownModelError,
    VersionExistsError,
    feature_schema_hash,
)

MODELS_DIR = Path(__file__).parent / "models"
SINGLE_TREE = MODELS_DIR / "single_tree.txt"  # 4 features, Column_0..3
FEATURES = ["amount", "card_tx_count_1h", "seconds_since_prev", "merchant_fraud_rate"]
WINDOW = (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC))


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry", cache_dir=tmp_path / "cache")


def register(registry: ModelRegistry, **overrides: object) -> ModelManifest:
    kwargs: dict[str, object] = {
        "feature_names": FEATURES,
        "params": {"num_leaves": 20, "objective": "binary"},
        "metrics": {"auc": 0.91, "average_precision": 0.42},
        "window": WINDOW,
    }
    kwargs.update(overrides)
    return registry.register(SINGLE_TREE, **kwargs)  # type: ignore[arg-type]


def rows(n: int = 500) -> np.ndarray:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 4))
    X[rng.random(X.shape) < 0.1] = np.nan
    return X


def version_dir(registry: ModelRegistry, version: str) -> Path:
    assert isinstance(registry.storage, LocalStorage)
    return registry.storage.root / "versions" / version


def flip_a_byte(path: Path) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------- registering


def test_register_writes_an_immutable_version(registry: ModelRegistry) -> None:
    m = register(registry)
    assert m.version.startswith("v0001-")
    assert m.feature_schema_hash == feature_schema_hash(FEATURES)
    assert m.window.from_ == WINDOW[0] and m.window.until == WINDOW[1]
    assert m.build is not None and "-O3" in m.build.cflags
    assert m.lightgbm_version == lgb.__version__
    d = version_dir(registry, m.version)
    assert sorted(p.name for p in d.iterdir()) == ["manifest.json", "model.so", "model.txt"]
    for name, record in m.artifacts.items():
        assert compiled_mod.file_sha256(d / name) == record.sha256
        assert (d / name).stat().st_mode & 0o222 == 0  # read-only
    assert registry.get(m.version) == m
    assert registry.resolve("latest") == m.version
    assert registry.resolve("v0001") == m.version


def test_registering_never_overwrites(registry: ModelRegistry) -> None:
    first = register(registry)
    d = version_dir(registry, first.version)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in d.iterdir()}
    second = register(registry, metrics={"auc": 0.5})
    assert second.version != first.version
    assert second.version.startswith("v0002-")
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in d.iterdir()} == before
    assert [m.version for m in registry.list()] == [first.version, second.version]


def test_a_version_cannot_be_registered_twice(registry: ModelRegistry) -> None:
    m = register(registry)
    with pytest.raises(VersionExistsError):
        register(registry, version=m.version)
    storage = registry.storage
    assert isinstance(storage, LocalStorage)
    with pytest.raises(VersionExistsError):
        storage.publish(f"versions/{m.version}", {"model.txt": SINGLE_TREE})
    assert registry.get(m.version) == m


def test_half_written_versions_are_invisible(registry: ModelRegistry) -> None:
    m = register(registry)
    assert isinstance(registry.storage, LocalStorage)
    staging = registry.storage.root / ".staging" / "publish-crashed"
    staging.mkdir(parents=True)
    (staging / "model.txt").write_text("half")
    (registry.storage.root / "versions" / "not-a-version").mkdir()
    assert [x.version for x in registry.list()] == [m.version]


def test_manifest_round_trip(registry: ModelRegistry) -> None:
    m = register(registry, parent=None, metrics={"auc": 0.9, "average_precision": float("nan")})
    assert m.metrics == {"auc": 0.9, "average_precision": None}
    text = (version_dir(registry, m.version) / "manifest.json").read_text()
    assert json.loads(text)["window"] == {
        "from": "2024-01-01T00:00:00Z",
        "until": "2024-03-01T00:00:00Z",
    }
    again = ModelManifest.from_json(text)
    assert again == m
    assert ModelManifest.from_json(again.to_json()) == m
    assert again.digest() == m.digest()
    assert len(m.digest()) == 64


def test_parent_is_resolved_and_must_exist(registry: ModelRegistry) -> None:
    first = register(registry)
    registry.promote(first.version)
    child = register(registry, parent="champion")
    assert child.parent == first.version
    with pytest.raises(UnknownModelError):
        register(registry, parent="v0042")


def test_bad_inputs_are_refused(registry: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="features"):
        register(registry, feature_names=FEATURES[:3])
    with pytest.raises(ValidationError):
        register(registry, window=(datetime(2024, 1, 1), None))  # naive
    with pytest.raises(ValidationError):
        register(registry, window=(WINDOW[1], WINDOW[0]))
    assert registry.list() == []


def test_feature_names_must_match_the_booster(registry: ModelRegistry) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    booster = lgb.train(
        {"objective": "binary", "verbose": -1},
        lgb.Dataset(X, (X[:, 0] > 0).astype(int), feature_name=["amount", "hour"]),
        num_boost_round=2,
    )
    m = registry.register(booster, feature_names=["amount", "hour"])
    assert m.feature_names == ["amount", "hour"]
    with pytest.raises(RegistryError, match="differ"):
        registry.register(booster, feature_names=["hour", "amount"])


def test_feature_schema_hash_is_order_sensitive_and_stable() -> None:
    a = feature_schema_hash(["amount", "hour"])
    assert a == feature_schema_hash(("amount", "hour"))
    assert a != feature_schema_hash(["hour", "amount"])
    assert len(a) == 64 and int(a, 16) >= 0


def test_concurrent_registrations_get_distinct_versions(registry: ModelRegistry) -> None:
    names: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            names.append(register(registry).version)
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(n.split("-")[0] for n in names) == ["v0001", "v0002", "v0003"]


# ------------------------------------------------------------------------------- aliases


def test_promote_and_rollback(registry: ModelRegistry) -> None:
    v1, v2, v3 = (register(registry).version for _ in range(3))
    registry.promote(v1)
    registry.promote(v2)
    registry.promote(v3, alias="challenger")
    assert registry.resolve("champion") == v2
    assert registry.get("challenger").version == v3
    assert registry.rollback() == v1
    assert registry.resolve("champion") == v1
    assert registry.resolve("challenger") == v3  # other aliases untouched
    with pytest.raises(RegistryError, match="roll back"):
        registry.rollback()
    state = registry.aliases()["champion"]
    assert [(e.action, e.version, e.previous) for e in state.log] == [
        ("promote", v1, None),
        ("promote", v2, v1),
        ("rollback", v1, v2),
    ]


def test_repeated_rollbacks_walk_back(registry: ModelRegistry) -> None:
    v1, v2, v3 = (register(registry).version for _ in range(3))
    for v in (v1, v2, v3):
        registry.promote(v)
    assert registry.rollback() == v2
    assert registry.rollback() == v1


def test_promote_needs_a_known_version_and_a_sane_alias(registry: ModelRegistry) -> None:
    v1 = register(registry).version
    with pytest.raises(UnknownModelError):
        registry.promote("v0099-deadbeef")
    with pytest.raises(RegistryError):
        registry.promote(v1, alias="latest")
    with pytest.raises(RegistryError):
        registry.promote(v1, alias="Bad Alias")
    with pytest.raises(UnknownModelError):
        registry.resolve("champion")
    registry.promote("latest")
    assert registry.resolve("champion") == v1


def test_alias_files_are_replaced_atomically(registry: ModelRegistry) -> None:
    v1, v2 = (register(registry).version for _ in range(2))
    registry.promote(v1)
    registry.promote(v2)
    assert isinstance(registry.storage, LocalStorage)
    alias_dir = registry.storage.root / "aliases"
    assert sorted(p.name for p in alias_dir.iterdir()) == ["champion.json"]  # no temp litter
    assert json.loads((alias_dir / "champion.json").read_text())["version"] == v2


# ------------------------------------------------------------------------------- loading


def test_load_verifies_and_scores_like_lightgbm(registry: ModelRegistry) -> None:
    m = register(registry)
    registry.promote(m.version)
    loaded = registry.load()
    assert loaded.version == m.version
    assert loaded.scorer.engine == "tl2cgen"
    X = rows()
    expected = lgb.Booster(model_file=str(SINGLE_TREE)).predict(X, num_threads=1)
    np.testing.assert_allclose(loaded.score_many(X), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(loaded.booster.predict(X), expected, rtol=0, atol=0)
    assert loaded.score_one(X[0]) == pytest.approx(expected[0], abs=1e-12)


def test_tampered_library_is_refused(registry: ModelRegistry) -> None:
    m = register(registry)
    flip_a_byte(version_dir(registry, m.version) / "model.so")
    with pytest.raises(ModelIntegrityError):
        registry.load(m.version)
    with pytest.raises(ModelIntegrityError):
        registry.verify(m.version)


def test_tampered_booster_is_refused(registry: ModelRegistry) -> None:
    m = register(registry)
    path = version_dir(registry, m.version) / "model.txt"
    path.chmod(0o644)
    path.write_text(path.read_text().replace("shrinkage=1", "shrinkage=2"))
    with pytest.raises(ModelIntegrityError):
        registry.load(m.version)


def test_library_from_another_platform_is_rebuilt_into_the_cache(
    registry: ModelRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    real = compiled_mod.platform_identity
    with monkeypatch.context() as patch:
        patch.setattr(
            compiled_mod,
            "platform_identity",
            lambda *, native=False: {**real(native=native), "machine": "riscv64"},
        )
        m = register(registry)
    assert m.build is not None and m.build.platform["machine"] == "riscv64"
    with caplog.at_level(logging.WARNING, logger="scoring.registry"):
        loaded = registry.load(m.version)
    assert loaded.scorer.engine == "tl2cgen"
    assert "rebuilding" in caplog.text and "riscv64" in caplog.text
    assert list((tmp_path / "cache").glob("*/model.so"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="scoring.registry"):
        registry.load(m.version)
    assert "cached rebuild" in caplog.text
    X = rows()
    expected = lgb.Booster(model_file=str(SINGLE_TREE)).predict(X, num_threads=1)
    np.testing.assert_allclose(loaded.score_many(X), expected, rtol=0, atol=1e-12)


def test_without_a_compiler_gtil_scores(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    no_cc = ModelRegistry(
        tmp_path / "registry",
        cache_dir=tmp_path / "cache",
        compile_options={"cc": "no-such-compiler"},
    )
    with pytest.raises(ModelCompileError):
        register(no_cc)
    assert no_cc.list() == []
    m = register(no_cc, require_compiled=False)
    assert "model.so" not in m.artifacts and m.build is None
    with caplog.at_level(logging.WARNING, logger="scoring.registry"):
        loaded = no_cc.load(m.version)
    assert loaded.scorer.engine == "gtil"
    assert "GTIL" in caplog.text
    X = rows()
    expected = lgb.Booster(model_file=str(SINGLE_TREE)).predict(X, num_threads=1)
    np.testing.assert_allclose(loaded.score_many(X), expected, rtol=0, atol=1e-12)
    with pytest.raises(ModelCompileError):
        no_cc.load(m.version, allow_gtil=False)


def test_unknown_refs(registry: ModelRegistry) -> None:
    with pytest.raises(UnknownModelError):
        registry.resolve("latest")
    register(registry)
    for ref in ("champion", "v0002", "v0001-00000000", "nonsense ref"):
        with pytest.raises(UnknownModelError):
            registry.get(ref)


def test_training_window_accepts_open_ends() -> None:
    w = TrainingWindow.model_validate({"from": None, "until": datetime.now(UTC)})
    assert w.from_ is None
    w2 = TrainingWindow(from_=datetime.now(UTC) - timedelta(days=1))
    assert w2.until is None
