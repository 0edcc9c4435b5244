"""`stream.replay` against the real broker: every transaction arrives once, per-card order holds,
labels go out, and the messages decode back to the log."""

from __future__ import annotations

import time
from collections import defaultdict

import pyarrow as pa
import pytest

from scoring.settings import KafkaSettings
from scoring.wire import decode_labels, decode_transactions
from stream.replay import replay
from stream.topics import TopicNames, create_topics
from training.simulator import SimulationConfig, simulate

pytestmark = pytest.mark.kafka


def _consume_all(kafka: KafkaSettings, topic: str, expected: int) -> list[tuple[int, bytes, bytes]]:
    from confluent_kafka import Consumer

    consumer = Consumer({**kafka.client_config(), "group.id": f"check-{topic}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    consumer.subscribe([topic])
    out: list[tuple[int, bytes, bytes]] = []
    deadline = time.monotonic() + 60
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=1.0):
                assert message.error() is None, message.error()
                out.append((message.partition(), message.key(), message.value()))
    finally:
        consumer.close()
    return out


def test_replay_keeps_every_cards_order(kafka_settings: KafkaSettings, topic_prefix: str) -> None:
    kafka = kafka_settings.model_copy(update={"topic_prefix": topic_prefix, "partitions": 3})
    create_topics(kafka)
    transactions, labels = simulate(SimulationConfig(days=3, cards=300, seed=11))
    summary = replay(transactions, labels, kafka=kafka)
    assert summary.failed == 0
    assert summary.transactions == transactions.num_rows and summary.labels == labels.num_rows

    names = TopicNames.from_settings(kafka)
    received = _consume_all(kafka, names.transactions, transactions.num_rows)
    assert len(received) == transactions.num_rows
    decoded, positions, rejected = decode_transactions([value for _, _, value in received])
    assert rejected == [] and len(positions) == len(received)
    ids = decoded.column("transaction_id").to_pylist()
    assert sorted(ids) == sorted(transactions.column("transaction_id").to_pylist())

    partitions: dict[bytes, set[int]] = defaultdict(set)
    times: dict[str, list[int]] = defaultdict(list)
    millis = decoded.column("timestamp").cast(pa.int64()).to_pylist()
    for (partition, key, _), card, moment in zip(
        received, decoded.column("card_id").to_pylist(), millis, strict=True
    ):
        assert key == card.encode()
        partitions[key].add(partition)
        times[card].append(moment)
    assert all(len(p) == 1 for p in partitions.values())  # one partition per card
    assert all(t == sorted(t) for t in times.values())  # in time order within the card

    label_messages = _consume_all(kafka, names.labels, labels.num_rows)
    decoded_labels, _, label_rejects = decode_labels([v for _, _, v in label_messages])
    assert label_rejects == [] and decoded_labels.num_rows == labels.num_rows
