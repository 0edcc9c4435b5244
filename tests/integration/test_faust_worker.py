"""The faust benchmark worker (benchmarks/faust_worker.py) against the real broker.

A small simulated log is replayed into fresh topics, two bad messages are added, and the worker runs
as a subprocess (``--max-seconds`` as a safety net; it is stopped with SIGTERM once every decision
is visible). The committed ``decisions`` topic must hold a decision for every transaction (exactly
one each under ``exactly_once``), the bad messages must be in the DLQ with their reasons, and the
worker's JSON summary line must agree with what it produced.

The ``transactions`` topic is created with ``compression.type=uncompressed``: the replay produces
lz4 batches and aiokafka (hence faust) cannot decompress lz4 without ``cramjam``, which the project
does not install; with that topic setting the broker stores the batches uncompressed.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest

from scoring.messages import ERROR_HEADER
from scoring.registry import ModelRegistry
from scoring.settings import KafkaSettings
from stream.replay import replay
from stream.topics import PRODUCER_PARTITIONER, TopicNames, TopicSpec, create_topics, topic_specs
from tests.integration.stream_harness import decisions_by_id, read_topic
from training.simulator import SimulationConfig, simulate
from training.train import train_and_register

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

WORKER = Path(__file__).resolve().parents[2] / "benchmarks" / "faust_worker.py"
BAD_MESSAGES = [(b"card-bad-1", b"not json"), (b"card-bad-2", b'{"transaction_id": 7}')]
MAX_SECONDS = 40


class World:
    def __init__(self, root: Path) -> None:
        self.transactions, labels = simulate(SimulationConfig(days=4, cards=300, seed=3))
        self.registry_dir = root / "registry"
        registry = ModelRegistry(self.registry_dir)
        start = self.transactions.column("timestamp")[0].as_py()
        self.version = train_and_register(
            self.transactions, labels, registry=registry, until=start + timedelta(days=3)
        ).version
        registry.promote(self.version)
        self.ids: list[str] = self.transactions.column("transaction_id").to_pylist()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("faust-world"))


def _create_topics(kafka: KafkaSettings) -> None:
    transactions = kafka.topic("transactions")
    specs = [
        TopicSpec(s.name, s.partitions, {**s.config, "compression.type": "uncompressed"})
        if s.name == transactions
        else s
        for s in topic_specs(kafka)
    ]
    results = create_topics(kafka, specs)
    assert all(r.created and not r.mismatch for r in results), results


def _produce_bad(kafka: KafkaSettings, topic: str) -> None:
    from confluent_kafka import Producer

    producer = Producer({**kafka.client_config(), "partitioner": PRODUCER_PARTITIONER})
    for key, value in BAD_MESSAGES:
        producer.produce(topic, value, key)
    assert producer.flush(30) == 0


def _replay(transactions: pa.Table, kafka: KafkaSettings) -> None:
    summary = replay(transactions, kafka=kafka)
    assert summary.failed == 0
    assert summary.transactions == transactions.num_rows


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_faust_worker_decides_every_transaction(
    world: World,
    guarantee: str,
    kafka_settings: KafkaSettings,
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    kafka = kafka_settings.model_copy(update={"topic_prefix": topic_prefix, "partitions": 3})
    topics = TopicNames.from_settings(kafka)
    _create_topics(kafka)
    _replay(world.transactions, kafka)
    _produce_bad(kafka, topics.transactions)
    n = len(world.ids)

    log = tmp_path / "faust-worker.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                "--bootstrap",
                kafka_bootstrap,
                "--topic-prefix",
                topic_prefix,
                "--registry",
                str(world.registry_dir),
                "--guarantee",
                guarantee,
                "--batch",
                "1000",
                "--max-seconds",
                str(MAX_SECONDS),
                "--data-dir",
                str(tmp_path / "faust"),
                "--commit-interval",
                "1.0",
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        try:
            records = read_topic(
                kafka, topics.decisions, expected=n, timeout=MAX_SECONDS + 5, quiet=2.0
            )
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            stdout, _ = process.communicate(timeout=60)
    tail = log.read_text(errors="replace")[-4000:]
    assert process.returncode == 0, tail
    lines = stdout.decode().strip().splitlines()
    assert lines, f"no summary line on stdout\n{tail}"
    summary: dict[str, Any] = orjson.loads(lines[-1])

    decided, twice = decisions_by_id(records)
    missing = sorted(set(world.ids) - set(decided))
    assert missing == [], f"{len(missing)} transactions without a decision, e.g. {missing[:3]}"
    assert set(decided) == set(world.ids)
    assert all(d["model_version"] == world.version for d in decided.values())
    assert all(key == orjson.loads(value)["transaction_id"].encode() for key, value, _ in records)
    if guarantee == "exactly_once":
        assert twice == [], f"{len(twice)} transactions decided twice, e.g. {twice[:3]}"
        assert summary["decisions"] == len(records) == n
    else:  # at least once: duplicates allowed, and every counted decision is in the topic
        assert len(records) >= summary["decisions"] >= n

    dead = read_topic(kafka, topics.transactions_dlq, expected=len(BAD_MESSAGES), timeout=30)
    assert sorted((key, value) for key, value, _ in dead) == sorted(BAD_MESSAGES)
    assert all(headers.get(ERROR_HEADER) for _, _, headers in dead)

    assert summary["error"] is None
    assert summary["guarantee"] == guarantee
    assert summary["partitions"] == 3
    assert summary["dead_letters"] == len(BAD_MESSAGES)
    assert summary["feature_log"] == summary["decisions"]
    assert summary["messages"] == summary["decisions"] + summary["dead_letters"]
    assert 1 <= summary["batches"] <= summary["messages"]
    assert summary["cpu_seconds"] > summary["startup_cpu_seconds"] > 0
    assert 0 < summary["busy_seconds"] <= summary["wall_seconds"] <= MAX_SECONDS + 30
