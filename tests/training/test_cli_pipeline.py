"""train -> registry -> score-log -> evaluate through the real command line, on simulated data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow.parquet as pq
import pytest

from scoring.features import FEATURE_NAMES
from scoring.reasons import top_reasons
from scoring.registry import ModelRegistry

pytestmark = pytest.mark.slow


def fraudstream(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "fraudstream", *args], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    fraudstream("simulate", "--out", str(out), "--days", "21", "--cards", "1500", "--seed", "5")
    return out


def _train(data: Path, registry: Path) -> str:
    result = fraudstream(
        "train", "--transactions", str(data / "transactions.parquet"),
        "--labels", str(data / "labels.parquet"), "--from", "2026-01-08", "--until", "2026-01-19",
        "--registry", str(registry), "--seed", "3",
    )  # fmt: skip
    return result.stdout.strip().splitlines()[-1]


def test_train_score_evaluate(data: Path, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    version = _train(data, registry)
    models = ModelRegistry(registry)
    manifest = models.get(version)
    assert manifest.feature_names == list(FEATURE_NAMES)
    assert manifest.window.from_ is not None and manifest.window.from_.day == 8
    assert manifest.metrics["train_frauds"] > 0

    # the same data and seed give the same model, registered as a new immutable version
    again = _train(data, registry)
    assert again != version
    first = (registry / "versions" / version / "model.txt").read_text()
    second = (registry / "versions" / again / "model.txt").read_text()
    assert first == second

    fraudstream("models", "promote", version, "--registry", str(registry), "--no-announce")
    assert models.resolve("champion") == version
    out = tmp_path / "scores.parquet"
    fraudstream(
        "score-log", "--transactions", str(data / "transactions.parquet"),
        "--labels", str(data / "labels.parquet"), "--from", "2026-01-19",
        "--registry", str(registry), "--out", str(out),
    )  # fmt: skip
    scores = pq.read_table(out)
    assert scores.column_names[:4] == ["transaction_id", "score", "action", "model_version"]
    assert set(scores["model_version"].to_pylist()) == {version}
    assert set(scores["action"].to_pylist()) <= {"approve", "review", "decline"}
    s = scores["score"].to_numpy()
    assert np.all((s >= 0) & (s <= 1))

    result = fraudstream("evaluate", "--scores", str(out), "--labels", str(data / "labels.parquet"))
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["frauds"] > 0
    assert metrics["auc_roc"] > 0.8  # a real model, not a coin
    assert metrics["cost_per_transaction"] < metrics["approve_all_cost_per_transaction"]

    fraudstream("models", "promote", again, "--registry", str(registry), "--no-announce")
    fraudstream("models", "rollback", "--registry", str(registry), "--no-announce")
    assert models.resolve("champion") == version
    listing = fraudstream("models", "list", "--registry", str(registry)).stdout
    assert version in listing and again in listing


def test_reasons_are_signed_contributions_that_sum_to_the_margin(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 4))
    y = (X[:, 0] + 0.5 * X[:, 1] > 1).astype(int)
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1},
                        lgb.Dataset(X, y), num_boost_round=20)  # fmt: skip
    rows = X[:5].copy()
    rows[0, 3] = np.nan
    reasons = top_reasons(booster, rows, ["a", "b", "c", "d"], k=4)
    contrib = booster.predict(rows, pred_contrib=True)
    for i, row_reasons in enumerate(reasons):
        magnitudes = [abs(r["contribution"]) for r in row_reasons]
        assert magnitudes == sorted(magnitudes, reverse=True)
        total = sum(r["contribution"] for r in row_reasons) + contrib[i, -1]
        assert total == pytest.approx(booster.predict(rows[i : i + 1], raw_score=True)[0])
    assert all(r["value"] is None for r in reasons[0] if r["feature"] == "d")
