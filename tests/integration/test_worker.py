"""The stream worker against the real broker (issue 4's acceptance tests).

One simulated log of ~21k transactions and its labels; a model trained on its first week. Every
test replays the log into its own topics and checks the committed ``decisions`` topic:

* an uninterrupted worker decides every transaction exactly once, with the offline
  ``score-log`` scores (|Δ| ≤ 1e-9: in fact bit-identical), and its /metrics agree;
* a worker SIGKILLed twice mid-replay and restarted gives exactly the uninterrupted decisions;
* a second worker that joins mid-replay and leaves again changes nothing either;
* bad messages go to the DLQ with their reasons while the worker carries on;
* a promoted model is hot-swapped between batches; a tampered one is refused.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from scoring.announcements import ModelAnnouncement, announcement_for
from scoring.card_data import mask_card_numbers
from scoring.registry import ModelRegistry
from scoring.settings import KafkaSettings
from stream.announce import publish_announcement
from stream.replay import replay
from stream.topics import PRODUCER_PARTITIONER, create_topics
from tests.integration.stream_harness import (
    Stack,
    comparable,
    decisions_by_id,
    read_topic,
)
from tests.integration.stream_harness import metric as _metric
from tests.integration.stream_harness import produced as _produced
from tests.integration.stream_harness import wait_for as _wait_for
from training.offline import score_log
from training.simulator import SimulationConfig, simulate
from training.train import train_and_register

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


class World:
    def __init__(self, root: Path) -> None:
        self.transactions, self.labels = simulate(SimulationConfig(days=10, cards=1250, seed=21))
        self.registry_dir = root / "registry"
        registry = ModelRegistry(self.registry_dir)
        start = self.transactions.column("timestamp")[0].as_py()
        until = start + timedelta(days=7)
        self.champion = train_and_register(
            self.transactions, self.labels, registry=registry, until=until, seed=1
        ).version
        self.challenger = train_and_register(
            self.transactions, self.labels, registry=registry, until=until, seed=2
        ).version
        registry.promote(self.champion)
        offline = score_log(self.transactions, self.labels, registry.load(self.champion))
        self.offline = dict(
            zip(offline["transaction_id"].to_pylist(), offline["score"].to_pylist(), strict=True)
        )
        self.ids = self.transactions.column("transaction_id").to_pylist()
        self.uninterrupted: dict[str, dict[str, Any]] | None = None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("world"))


@pytest.fixture
def stack(world: World, stack_factory: Callable[[Path], Stack]) -> Stack:
    return stack_factory(world.registry_dir)


def _replay_in_background(
    world: World, kafka: KafkaSettings, rate: float, part: tuple[float, float] = (0.0, 1.0)
) -> threading.Thread:
    """Replay the world (or the ``part`` of its time span, as fractions) in a thread."""
    transactions, labels = world.transactions, world.labels
    if part != (0.0, 1.0):
        times = pc.cast(transactions["timestamp"], pa.int64()).to_numpy()
        lo, hi = (times[0] + f * (times[-1] - times[0] + 1) for f in part)
        reported = pc.cast(labels["reported_at"], pa.int64()).to_numpy()
        transactions = transactions.filter(pa.array((times >= lo) & (times < hi)))
        labels = labels.filter(pa.array((reported >= lo) & (reported < hi)))

    def run() -> None:
        summary = replay(transactions, labels, kafka=kafka, rate=rate)
        assert summary.failed == 0

    thread = threading.Thread(target=run, name="replay")
    thread.start()
    return thread


def _all_decisions(stack: Stack, world: World) -> dict[str, dict[str, Any]]:
    records = read_topic(stack.kafka, stack.topics.decisions, expected=len(world.ids))
    decided, twice = decisions_by_id(records)
    assert twice == [], f"{len(twice)} transactions decided twice, e.g. {twice[:3]}"
    missing = [i for i in world.ids if i not in decided]
    assert missing == [], f"{len(missing)} transactions without a decision, e.g. {missing[:3]}"
    assert len(decided) == len(world.ids)
    return decided


def _uninterrupted(world: World, stack: Stack) -> dict[str, dict[str, Any]]:
    worker = stack.start("solo")
    worker.wait_ready()
    summary = replay(world.transactions, world.labels, kafka=stack.kafka)
    assert summary.failed == 0
    decided = _all_decisions(stack, world)
    metrics = worker.metrics()
    assert worker.stop() == 0, worker.tail()
    assert _metric(metrics, "fraudstream_stream_events_total", direction="out") == len(world.ids)
    assert _metric(metrics, "fraudstream_stream_dlq_total") == 0
    assert _metric(metrics, "fraudstream_model_info", version=world.champion) == 1
    assert _metric(metrics, "fraudstream_stream_end_to_end_latency_seconds_count") == len(world.ids)
    for stage in ("decode", "features", "model", "reasons", "encode", "produce", "commit"):
        assert _metric(metrics, "fraudstream_stream_stage_duration_seconds_count", stage=stage) > 0
    assert _metric(metrics, "fraudstream_stream_cpu_seconds_total") > 0
    return decided


@pytest.fixture
def uninterrupted(world: World, stack: Stack) -> dict[str, dict[str, Any]]:
    if world.uninterrupted is None:
        world.uninterrupted = _uninterrupted(world, stack)
    return world.uninterrupted


def test_online_decisions_equal_offline_score_log(
    world: World, uninterrupted: dict[str, dict[str, Any]]
) -> None:
    online = np.array([uninterrupted[i]["score"] for i in world.ids])
    offline = np.array([world.offline[i] for i in world.ids])
    assert len(world.ids) >= 20_000
    assert np.max(np.abs(online - offline)) <= 1e-9
    assert {d["model_version"] for d in uninterrupted.values()} == {world.champion}
    flagged = [d for d in uninterrupted.values() if d["action"] != "approve"]
    assert flagged and all(d["reasons"] for d in flagged)  # review/decline always say why


def _same_decisions(got: dict[str, dict[str, Any]], want: dict[str, dict[str, Any]]) -> None:
    differ = [i for i in want if comparable(got[i]) != comparable(want[i])]
    assert differ == [], (
        f"{len(differ)} decisions differ from the uninterrupted run, e.g. "
        f"{comparable(got[differ[0]])} vs {comparable(want[differ[0]])}"
    )


def test_sigkill_twice_gives_the_uninterrupted_decisions(
    world: World, uninterrupted: dict[str, dict[str, Any]], stack: Stack, request: Any
) -> None:
    # fresh topics for this run (the uninterrupted fixture may have used the same stack)
    kafka = stack.kafka.model_copy(update={"topic_prefix": stack.kafka.topic_prefix + "kill."})
    create_topics(kafka)
    stack.kafka = kafka
    rng = random.Random(request.node.name)
    worker = stack.start("crashy")
    worker.wait_ready()
    producing = _replay_in_background(world, kafka, rate=2000)  # ~10 s of traffic
    n = len(world.ids)
    # kill at random points after some decisions were committed (then the restart must restore
    # a checkpoint, re-read, and decide the rest exactly once)
    for low, high in ((0.15, 0.35), (0.5, 0.7)):
        threshold = rng.uniform(low, high) * n
        ready_at = time.monotonic()
        _wait_for(lambda t=threshold: _produced(kafka, kafka.topic("decisions")) >= t, 120,
                  f"{threshold:.0f} decisions")  # fmt: skip
        # ...and after this incarnation had time to write a checkpoint (every 2 s here)
        time.sleep(max(0.0, ready_at + 3.0 - time.monotonic()) + rng.uniform(0.0, 0.3))
        worker.kill()
        worker = stack.start("crashy")  # same instance name: same state dir and group member
        worker.wait_ready()
    producing.join()
    decided = _all_decisions(stack, world)
    _same_decisions(decided, uninterrupted)
    assert worker.stop() == 0
    restarts = [w.log.read_text() for w in stack.workers if w.name == "crashy"][1:]
    assert len(restarts) == 2
    assert all("restored from checkpoint" in text for text in restarts), "no checkpoint used"


def test_a_worker_joining_and_leaving_changes_nothing(
    world: World, uninterrupted: dict[str, dict[str, Any]], stack: Stack
) -> None:
    kafka = stack.kafka.model_copy(update={"topic_prefix": stack.kafka.topic_prefix + "scale."})
    create_topics(kafka)
    stack.kafka = kafka
    first = stack.start("first")
    first.wait_ready()
    # The second worker joins after the first half of the traffic and before the second half,
    # however long it takes to start on a busy machine; it leaves while the second half flows.
    _replay_in_background(world, kafka, rate=2000, part=(0.0, 0.5)).join()
    second = stack.start("second")
    second.wait_ready()
    producing = _replay_in_background(world, kafka, rate=1000, part=(0.5, 1.0))

    def second_decides() -> bool:  # it rebuilds its state from the topics' start first
        text = second.metrics()
        return 'fraudstream_stream_events_total{direction="out"}' in text and (
            _metric(text, "fraudstream_stream_events_total", direction="out") > 0
        )

    _wait_for(second_decides, 120, "the second worker's first decisions")
    assert second.stop() == 0, second.tail()
    producing.join()
    decided = _all_decisions(stack, world)
    _same_decisions(decided, uninterrupted)
    summary = re.search(r"worker second: ([\d,]+) decisions", second.log.read_text())
    assert summary and int(summary.group(1).replace(",", "")) > 0, "the second worker idled"
    assert first.stop() == 0


BAD_MESSAGES = {
    b"this is not json": "not JSON",
    b'{"transaction_id": "bad-1", "card_id": "c1", "timestamp": 1767571200000}': "amount",
    b'{"transaction_id": "bad-2", "card_id": "4111111111111111", "amount": 5.0, '
    b'"timestamp": 1767571200000}': "card_id",
    b'{"transaction_id": "bad-3", "card_id": "c1", "amount": -3.5, '
    b'"timestamp": 1767571200000}': "amount",
    # msgspec quotes a bad enum value in its message: the reason must mask it
    b'{"transaction_id": "bad-4", "card_id": "c1", "amount": 5.0, "channel": "5555555555554444", '
    b'"timestamp": 1767571200000}': "channel",
}
PANS = (b"4111111111111111", b"5555555555554444")


def _unmasked(value: bytes) -> bytes:
    return next(bad for bad in BAD_MESSAGES if mask_card_numbers(bad)[0] == value)


def test_bad_messages_go_to_the_dlq_and_resent_ones_are_not_decided_twice(
    world: World, stack: Stack
) -> None:
    from confluent_kafka import Producer

    from scoring.wire import encode_transactions

    worker = stack.start("dlq")
    worker.wait_ready()
    good = world.transactions.slice(0, 300)
    values = encode_transactions(good)
    producer = Producer({**stack.kafka.client_config(), "partitioner": PRODUCER_PARTITIONER})
    for i, (key, value) in enumerate(zip(good["card_id"].to_pylist(), values, strict=True)):
        producer.produce(stack.topics.transactions, value=value, key=key.encode())
        if i == 100:
            for bad in BAD_MESSAGES:
                # keyed like a bank that put the card number in the key too
                key = PANS[0] if PANS[0] in bad else b"c1"
                producer.produce(stack.topics.transactions, value=bad, key=key)
    # a bank resending a transaction (same bank and id) gets no second decision
    resent_key = good["card_id"][5].as_py().encode()
    producer.produce(stack.topics.transactions, value=values[5], key=resent_key)
    producer.flush(30)

    decided, twice = decisions_by_id(
        read_topic(stack.kafka, stack.topics.decisions, expected=good.num_rows)
    )
    assert twice == [] and set(decided) == set(good["transaction_id"].to_pylist())
    dead = read_topic(stack.kafka, stack.topics.transactions_dlq, expected=len(BAD_MESSAGES))
    assert len(dead) == len(BAD_MESSAGES)
    # card numbers in dead letters are masked (key, value, reason), the rest kept as it came
    masked = {mask_card_numbers(bad)[0]: field for bad, field in BAD_MESSAGES.items()}
    for key, value, headers in dead:
        reason = headers["fraudstream-error"].decode()
        assert masked[value] in reason, (value, reason)
        assert key in (b"c1", b"*" * 16)
        assert ("fraudstream-masked" in headers) == (value != _unmasked(value))
        for pan in PANS:
            assert pan not in key + value + reason.encode()  # never echo a card number
        assert headers["fraudstream-source"].startswith(stack.topics.transactions.encode())
    assert _metric(worker.metrics(), "fraudstream_stream_resent_transactions_total") == 1
    assert worker.get("/healthz")[0] == 200
    assert worker.process.poll() is None
    assert worker.stop() == 0


def test_model_hot_swap_and_refusal(world: World, stack: Stack, tmp_path: Path) -> None:
    registry = ModelRegistry(world.registry_dir)
    worker = stack.start("swapper")
    worker.wait_ready()
    thirds = np.array_split(np.arange(world.transactions.num_rows), 3)

    def send(rows: np.ndarray) -> None:
        part = world.transactions.take(pa.array(rows))
        assert replay(part, kafka=stack.kafka).failed == 0

    def serves(version: str) -> bool:
        return f'fraudstream_model_info{{version="{version}"}} 1.0' in worker.metrics()

    send(thirds[0])
    read_topic(stack.kafka, stack.topics.decisions, expected=len(thirds[0]), quiet=0.5)
    # promote the challenger: the worker loads it beside the champion and swaps between batches
    previous = registry.resolve("champion")
    registry.promote(world.challenger)
    try:
        publish_announcement(stack.kafka, announcement_for(registry, "champion", previous=previous))
        _wait_for(lambda: serves(world.challenger), 60, "the swap to the challenger")
    finally:
        registry.promote(previous)  # other tests serve the champion
    send(thirds[1])

    # a forged announcement (digest of nothing we have) is refused; the challenger keeps serving
    forged = ModelAnnouncement.model_validate(
        {
            **orjson.loads(announcement_for(registry, "champion", previous=None).to_bytes()),
            "version": world.champion,
            "manifest_digest": "0" * 64,
        }
    )
    publish_announcement(stack.kafka, forged)
    _wait_for(
        lambda: 'fraudstream_model_swaps_total{outcome="refused"} 1.0' in worker.metrics(),
        60,
        "the refusal",
    )
    assert _metric(worker.metrics(), "fraudstream_model_integrity_failures_total") == 1
    assert serves(world.challenger)
    send(thirds[2])

    decided, twice = decisions_by_id(
        read_topic(stack.kafka, stack.topics.decisions, expected=len(world.ids))
    )
    assert twice == [] and len(decided) == len(world.ids)
    versions = [decided[i]["model_version"] for i in world.ids]
    first, second, third = (versions[r[0] : r[-1] + 1] for r in thirds)
    assert set(first) == {world.champion}
    assert set(second) == {world.challenger}
    assert set(third) == {world.challenger}
    assert worker.stop() == 0


def test_shadow_model_scores_beside_the_champion(world: World, stack: Stack) -> None:
    worker = stack.start("shadowed", FRAUD_STREAM__SHADOW_REF=world.challenger)
    worker.wait_ready()
    part = world.transactions.slice(0, 2000)
    assert replay(part, kafka=stack.kafka).failed == 0
    records = read_topic(stack.kafka, stack.topics.feature_log, expected=part.num_rows)
    logged = [orjson.loads(value) for _key, value, _headers in records]
    assert len(logged) == part.num_rows
    assert {r["model_version"] for r in logged} == {world.champion}
    assert {r["shadow_model_version"] for r in logged} == {world.challenger}
    # the shadow score is the challenger's score of the very vector the champion saw
    features = np.array([[np.nan if v is None else v for v in r["features"]] for r in logged])
    challenger = ModelRegistry(world.registry_dir).load(world.challenger)
    expected = challenger.score_many(features)
    assert np.max(np.abs(np.array([r["shadow_score"] for r in logged]) - expected)) <= 1e-12
    assert _metric(worker.metrics(), "fraudstream_shadow_model_info", version=world.challenger)
    # drift against the champion's training rows is exported (every 10 s)
    _wait_for(lambda: 'fraudstream_drift_psi{feature="score"}' in worker.metrics(), 30, "drift")
    assert 0.0 <= _metric(worker.metrics(), "fraudstream_drift_psi", feature="score") < 10.0
    # acting is the champion's alone
    decided, _ = decisions_by_id(read_topic(stack.kafka, stack.topics.decisions, expected=2000))
    assert {d["model_version"] for d in decided.values()} == {world.champion}
    assert worker.stop() == 0
