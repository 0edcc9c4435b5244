"""The incremental trainer against the real broker, with a real worker (issue 6).

Twelve simulated days whose fraud labels arrive within two days. A weak champion is trained on the
first two days only. The worker decides days 0–10 (labels replayed as the bank learns them); the
trainer (a ``fraudstream trainer`` subprocess, maturity two days) reads the topics, trains its
challengers, promotes one and announces it; the worker swaps, and days 10–12 are decided by the
new model. Then a trainer with an impossible margin refuses (and says why on /metrics), and
``fraudstream models rollback`` swaps the worker back.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from scoring.registry import ModelRegistry
from stream.replay import replay
from tests.integration.stream_harness import Stack, WorkerProcess, decisions_by_id, read_topic
from training.simulator import SimulationConfig, simulate
from training.train import train_and_register

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

DAYS, SPLIT_DAY, CHAMPION_DAYS = 12, 10, 2
TRAINER_ENV = {
    "FRAUD_TRAINING__LABEL_MATURITY_DAYS": "2",
    "FRAUD_TRAINING__WINDOW_DAYS": "9",
    "FRAUD_TRAINING__EVAL_DAYS": "2",
    "FRAUD_TRAINING__RETRAIN_EVERY_LABELS": "2000",
    "FRAUD_TRAINING__RETRAIN_INTERVAL_HOURS": "0",
    "FRAUD_TRAINING__MIN_EVAL_FRAUDS": "10",
    "FRAUD_TRAINING__MAX_TREES": "300",
    "FRAUD_TRAINING__CONTINUE_TREES": "100",
}


class World:
    def __init__(self, root: Path) -> None:
        config = SimulationConfig(
            days=DAYS, cards=2000, seed=11, fraud_rate=0.01,
            max_label_delay_days=2, label_maturity_days=2,
        )  # fmt: skip
        self.transactions, self.labels = simulate(config)
        self.registry_dir = root / "registry"
        registry = ModelRegistry(self.registry_dir)
        start = self.transactions.column("timestamp")[0].as_py()
        self.weak = train_and_register(
            self.transactions, self.labels, registry=registry,
            until=start + timedelta(days=CHAMPION_DAYS), seed=1,
        ).version  # fmt: skip
        registry.promote(self.weak)
        split = pa.scalar(config.start + timedelta(days=SPLIT_DAY), pa.timestamp("ms", tz="UTC"))
        before = pc.less(self.transactions["timestamp"], split)
        self.first = self.transactions.filter(before)
        self.second = self.transactions.filter(pc.invert(before))
        reported = pc.less(self.labels["reported_at"], split)
        self.first_labels = self.labels.filter(reported)
        self.second_labels = self.labels.filter(pc.invert(reported))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("trainer-world"))


@pytest.fixture
def stack(world: World, stack_factory: Callable[[Path], Stack]) -> Stack:
    return stack_factory(world.registry_dir)


def start_trainer(stack: Stack, name: str, **extra_env: str) -> WorkerProcess:
    """``fraudstream trainer`` as a subprocess (a WorkerProcess: same endpoints, same handling)."""
    (port,) = stack.ports(1)
    log = stack.root / f"{name}.log"
    env = {
        **stack.env,
        "FRAUD_KAFKA__TOPIC_PREFIX": stack.kafka.topic_prefix,
        "FRAUD_SCORING__REGISTRY": str(stack.registry),
        **TRAINER_ENV,
        **extra_env,
    }
    handle = open(log, "wb")  # noqa: SIM115 -- the child owns it for its lifetime
    process = subprocess.Popen(
        [sys.executable, "-m", "fraudstream", "trainer", "--port", str(port)],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    trainer = WorkerProcess(name, process, port, log)
    stack.workers.append(trainer)  # killed by stack.close() if a test fails
    return trainer


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith("#") or line.split("{")[0].split(" ")[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_for(check: Callable[[], Any], timeout: float, what: str, process: WorkerProcess) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.process.poll() is not None:
            raise AssertionError(
                f"{process.name} exited while waiting for {what}:\n{process.tail()}"
            )
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}:\n{process.tail(60)}")


def serves(worker: WorkerProcess, version: str) -> bool:
    return metric(worker.metrics(), "fraudstream_model_info", version=version) == 1.0


def test_trainer_promotes_the_worker_swaps_a_worse_challenger_is_refused_rollback_swaps_back(
    world: World, stack: Stack
) -> None:
    registry = ModelRegistry(world.registry_dir)
    assert registry.resolve("champion") == world.weak
    worker = stack.start("w1")
    worker.wait_ready()

    # days 0–10 through the worker, scored by the weak champion
    assert replay(world.first, world.first_labels, kafka=stack.kafka).failed == 0
    first_ids = world.first["transaction_id"].to_pylist()
    read_topic(stack.kafka, stack.topics.decisions, expected=len(first_ids), quiet=1.0)

    # the trainer learns from the feature log and the labels, and promotes a challenger
    started = time.monotonic()
    trainer = start_trainer(stack, "trainer")
    trainer.wait_ready(60)
    promoted = wait_for(
        lambda: (v := registry.resolve("champion")) != world.weak and v, 150, "a promotion", trainer
    )
    promoted_at = registry.aliases()["champion"].log[-1].at.timestamp()
    wait_for(lambda: serves(worker, promoted), 30, "the worker's swap", worker)
    swap_seconds = time.time() - promoted_at  # an upper bound: polled every 0.1 s
    print(f"\npromotion {time.monotonic() - started:.1f} s after the trainer started; "
          f"worker serving it {swap_seconds:.2f} s after the alias moved")  # fmt: skip

    manifest = registry.get(promoted)
    assert manifest.parent == world.weak
    assert manifest.params["kind"] in ("continued", "fresh")
    assert manifest.window.until is not None
    assert (
        manifest.metrics["holdout_average_precision"]
        > manifest.metrics["champion_holdout_average_precision"]
    )
    assert manifest.build is not None  # compiled as part of registration

    def promotion_exported() -> str | None:
        text = trainer.metrics()
        return text if metric(text, "fraudstream_trainer_promotions_total") else None

    text = wait_for(promotion_exported, 30, "the promotion on /metrics", trainer)
    assert metric(text, "fraudstream_trainer_last_success_timestamp_seconds") > 0  # type: ignore[operator]
    assert metric(text, "fraudstream_trainer_candidate_metric", candidate="champion",
                  metric="average_precision") is not None  # fmt: skip
    for stage in ("fit_fresh", "evaluate", "register", "publish"):
        assert metric(text, "fraudstream_trainer_stage_duration_seconds_count", stage=stage) == 1
    assert (metric(text, "fraudstream_trainer_window_rows", kind="joined") or 0) >= 0.9 * len(
        first_ids
    )
    announcements = read_topic(stack.kafka, stack.topics.model_updates, expected=1, quiet=0.5)
    last = orjson.loads(announcements[-1][1])
    assert (last["alias"], last["version"], last["previous_version"]) == (
        "champion", promoted, world.weak,
    )  # fmt: skip
    log = trainer.log.read_text()
    stages = re.search(r"stages: (.*); compile ([\d.]+) s", log)
    assert stages, log[-3000:]
    print(f"trainer stages: {stages.group(1)}; compile {stages.group(2)} s")
    assert trainer.stop() == 0, trainer.tail()

    # days 10–12: every transaction decided once across the swap, the new ones by the new model
    assert replay(world.second, world.second_labels, kafka=stack.kafka).failed == 0
    all_ids = first_ids + world.second["transaction_id"].to_pylist()
    decided, twice = decisions_by_id(
        read_topic(stack.kafka, stack.topics.decisions, expected=len(all_ids))
    )
    assert twice == [] and set(decided) == set(all_ids)
    assert {decided[i]["model_version"] for i in first_ids} == {world.weak}
    second_versions = {
        decided[i]["model_version"] for i in world.second["transaction_id"].to_pylist()
    }
    assert second_versions == {promoted}

    # a challenger that cannot be better: refused, said on /metrics and in the log
    stubborn = start_trainer(stack, "stubborn", FRAUD_TRAINING__PROMOTE_MARGIN="1")
    stubborn.wait_ready(60)
    wait_for(
        lambda: metric(
            stubborn.metrics(), "fraudstream_trainer_refusals_total", reason="not_better"
        ),
        150,
        "a refusal",
        stubborn,
    )
    text = stubborn.metrics()
    assert metric(text, "fraudstream_trainer_promotions_total") == 0
    assert metric(text, "fraudstream_trainer_last_success_timestamp_seconds") > 0  # type: ignore[operator]
    assert registry.resolve("champion") == promoted
    assert "kept champion" in stubborn.log.read_text() and "margin 1" in stubborn.log.read_text()
    assert stubborn.stop() == 0, stubborn.tail()

    # `fraudstream models rollback` announces; the worker swaps back
    result = subprocess.run(
        [sys.executable, "-m", "fraudstream", "models", "rollback", "--registry",
         str(world.registry_dir)],
        env={**stack.env, "FRAUD_KAFKA__TOPIC_PREFIX": stack.kafka.topic_prefix},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert registry.resolve("champion") == world.weak
    wait_for(lambda: serves(worker, world.weak), 30, "the swap back", worker)
    assert worker.stop() == 0, worker.tail()
