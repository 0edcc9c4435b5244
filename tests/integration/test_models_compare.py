"""``fraudstream models compare`` on the real broker, with a real worker in shadow mode.

Six simulated days (fraud reports within two days) are replayed with their labels into a worker
serving a weak champion (trained on two days) with a stronger challenger in shadow
(``FRAUD_STREAM__SHADOW_REF=challenger``). The command reads the feature log, the transactions and
the labels; its numbers must equal what ``training/evaluate.py`` computes offline on the same rows
(the scores the worker logged for both models, the maturity rule applied by hand).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from scoring.decision import DecisionPolicy
from scoring.features import FEATURE_NAMES
from scoring.logs import TIMESTAMP
from scoring.registry import ModelRegistry
from stream.replay import replay
from tests.integration.stream_harness import Stack, read_topic
from training.dataset import build_training_set, fraud_targets
from training.evaluate import evaluate
from training.fit import fit
from training.simulator import SimulationConfig, simulate

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

MATURITY_DAYS = 2
AS_OF_DAYS = 5  # the clock: transactions of days 0–3 are matured, later ones only if fraud


class World:
    def __init__(self, root: Path) -> None:
        config = SimulationConfig(
            days=6, cards=800, seed=8, fraud_rate=0.02,
            max_label_delay_days=MATURITY_DAYS, label_maturity_days=MATURITY_DAYS,
        )  # fmt: skip
        self.transactions, self.labels = simulate(config)
        self.start = config.start
        self.registry_dir = root / "registry"
        registry = ModelRegistry(self.registry_dir)
        versions = []
        for days in (2, 4):  # a champion, and a challenger that saw twice the days
            data = build_training_set(
                self.transactions, self.labels, until=config.start + timedelta(days=days)
            )
            grid = ({"num_leaves": 15, "min_data_in_leaf": 30},)
            result = fit(
                data.X, data.y, data.timestamp_ms, feature_names=list(FEATURE_NAMES),
                grid=grid,
            )  # fmt: skip
            window = (config.start, config.start + timedelta(days=days))
            manifest = registry.register(
                result.booster, feature_names=list(FEATURE_NAMES), params=result.params,
                window=window,
            )  # fmt: skip
            versions.append(manifest.version)
        self.champion, self.challenger = versions
        registry.promote(self.champion)
        registry.promote(self.challenger, "challenger")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("compare-world"))


@pytest.fixture
def stack(world: World, stack_factory: Callable[[Path], Stack]) -> Stack:
    return stack_factory(world.registry_dir)


def run_compare(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**stack.env, "FRAUD_KAFKA__TOPIC_PREFIX": stack.kafka.topic_prefix}
    env = {
        k: v for k, v in env.items() if not k.startswith(("FRAUD_SCORING__", "FRAUD_TRAINING__"))
    }
    return subprocess.run(
        [sys.executable, "-m", "fraudstream", "models", "compare", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def offline(world: World, scores: np.ndarray, keep: np.ndarray) -> dict[str, Any]:
    """training/evaluate.py on rows ``keep`` of the log scored with ``scores`` (decisions by the
    default policy, as the worker took them), in time order."""
    table = world.transactions.filter(pa.array(keep))
    picked = scores[keep]
    actions = DecisionPolicy().decide_many(table, picked).action_names()
    scored = table.select(["transaction_id", "card_id", "timestamp", "amount"])
    scored = scored.append_column("score", pa.array(picked, pa.float64()))
    scored = scored.append_column("action", pa.array(actions.tolist(), pa.string()))
    order = pc.sort_indices(scored, [("timestamp", "ascending"), ("transaction_id", "ascending")])
    return evaluate(scored.take(order), world.labels, k=100).as_dict()


def test_compare_reports_what_evaluate_computes_offline(world: World, stack: Stack) -> None:
    worker = stack.start("shadowed", FRAUD_STREAM__SHADOW_REF="challenger")
    worker.wait_ready()
    # before any traffic: nothing to compare, exit 1 with the reason
    empty = run_compare(stack)
    assert empty.returncode == 1 and "shadow" in empty.stderr, empty.stderr

    assert replay(world.transactions, world.labels, kafka=stack.kafka).failed == 0
    n = world.transactions.num_rows
    logged = {
        record["transaction_id"]: record
        for record in (
            orjson.loads(value)
            for _key, value, _headers in read_topic(
                stack.kafka, stack.topics.feature_log, expected=n, quiet=1.0
            )
        )
    }
    assert len(logged) == n
    as_of = world.start + timedelta(days=AS_OF_DAYS)
    done = run_compare(stack, "--maturity-days", str(MATURITY_DAYS), "--as-of", as_of.isoformat())
    assert done.returncode == 0, done.stderr
    print(done.stderr + done.stdout)  # docs/training.md quotes it (pytest -s)
    lines = done.stdout.strip().splitlines()
    report = orjson.loads(lines[-1])  # the JSON line is the last one on stdout
    assert "average precision" in done.stdout and "card precision@100" in done.stdout

    # the same rows, by hand: frauds at any age, unlabelled only once matured
    ts = world.transactions["timestamp"].cast(TIMESTAMP).cast(pa.int64()).to_numpy()
    y = fraud_targets(world.transactions, world.labels).astype(bool)
    cut = round(as_of.timestamp() * 1000) - MATURITY_DAYS * 86_400_000
    keep = y | (ts < cut)
    assert 0 < keep.sum() < n
    assert report["rows"] == int(keep.sum()) and report["frauds"] == int(y.sum())
    assert report["excluded"] == {"young_unlabelled": int(n - keep.sum())}
    assert report["champion"]["versions"] == {world.champion: int(keep.sum())}
    assert report["shadow"]["versions"] == {world.challenger: int(keep.sum())}

    ids = world.transactions["transaction_id"].to_pylist()
    for side, field in (("champion", "score"), ("shadow", "shadow_score")):
        expected = offline(world, np.array([logged[i][field] for i in ids]), keep)
        got = report[side]
        assert got["transactions"] == expected["transactions"]
        assert got["frauds"] == expected["frauds"]
        for key in ("auc_roc", "average_precision", "card_precision_at_k"):
            assert got[key] == pytest.approx(expected[key], abs=1e-9), (side, key)
        assert got["cost_per_transaction"] == pytest.approx(
            expected["cost_per_transaction"], abs=1e-9
        ), side
        assert got["decline_rate"] == pytest.approx(expected["action_share"]["decline"])
        assert got["review_rate"] == pytest.approx(expected["action_share"]["review"])
    assert report["shadow"]["average_precision"] != report["champion"]["average_precision"]

    # --since keeps the later transactions only
    since = world.start + timedelta(days=3)
    later = run_compare(stack, "--maturity-days", str(MATURITY_DAYS), "--as-of",
                        as_of.isoformat(), "--since", since.isoformat())  # fmt: skip
    assert later.returncode == 0, later.stderr
    recent = orjson.loads(later.stdout.strip().splitlines()[-1])
    since_ms = round(since.timestamp() * 1000)
    assert recent["rows"] == int((keep & (ts >= since_ms)).sum())
    assert worker.stop() == 0, worker.tail()
