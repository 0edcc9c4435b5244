"""Replay a transactions log (and its labels) into Kafka: ``fraudstream replay``.

Transactions are produced in time order keyed by ``card_id`` from one idempotent producer, so each
card's transactions stay in order on one partition even when the client retries. Labels are merged
in by ``reported_at``: a label goes out when the replay's event time passes the moment the bank
learned it. Pacing is either a target rate of transactions per second, a time-compression factor
(event time runs ``speedup`` times faster than the wall clock), or none (as fast as possible).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from scoring.logs import TIMESTAMP
from scoring.settings import KafkaSettings
from scoring.wire import encode_labels, encode_transactions
from stream.client_errors import ClientErrors
from stream.topics import PRODUCER_PARTITIONER, TopicNames

log = logging.getLogger("fraudstream.replay")

CHUNK = 2_000  # messages encoded and paced together


@dataclass(frozen=True)
class ReplaySummary:
    transactions: int
    labels: int
    seconds: float
    failed: int
    # connection errors and the like, by librdkafka's name (e.g. a broker restart's _TRANSPORT);
    # the client retried through them, ``failed`` counts what it gave up
    client_errors: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.transactions / self.seconds if self.seconds > 0 else float("inf")


def producer_config(kafka: KafkaSettings) -> dict[str, str | int | float | bool]:
    return {
        **kafka.client_config(),
        "enable.idempotence": True,  # retries never reorder or duplicate a card's events
        "acks": "all",
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 500_000,
        "partitioner": PRODUCER_PARTITIONER,
    }


def _millis(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(column.cast(TIMESTAMP).cast(pa.int64()).to_numpy(), dtype=np.int64)


def replay(
    transactions: pa.Table,
    labels: pa.Table | None = None,
    *,
    kafka: KafkaSettings,
    rate: float | None = None,
    speedup: float | None = None,
    on_progress: Callable[[int], None] = lambda _n: None,
) -> ReplaySummary:
    """Produce the log; returns when every message is acknowledged by the broker."""
    from confluent_kafka import Producer

    if rate is not None and rate <= 0:
        raise ValueError("rate must be > 0 transactions per second")
    if speedup is not None and speedup <= 0:
        raise ValueError("speedup must be > 0")
    topics = TopicNames.from_settings(kafka)
    tx_time = _millis(transactions["timestamp"])
    tx_order = np.argsort(tx_time, kind="stable")
    transactions = transactions.take(pa.array(tx_order))
    tx_time = tx_time[tx_order]
    if labels is not None and labels.num_rows:
        label_time = _millis(labels["reported_at"])
        label_order = np.argsort(label_time, kind="stable")
        labels = labels.take(pa.array(label_order))
        label_time = label_time[label_order]
    else:
        labels, label_time = None, np.empty(0, np.int64)

    client_errors = ClientErrors(log)
    producer = Producer({**producer_config(kafka), **client_errors.config()})
    failures = [0]

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            failures[0] += 1

    def send(topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered)
                return
            except BufferError:  # local queue full: let librdkafka drain it
                producer.poll(0.05)

    started = time.monotonic()
    first_event = int(tx_time[0]) if len(tx_time) else 0
    next_label = 0
    n = transactions.num_rows
    # Paced replays send small chunks (10 ms of traffic) so that pacing does not come in bursts.
    step = CHUNK if rate is None else int(min(CHUNK, max(1, rate / 100)))
    for start in range(0, n, step):
        chunk = transactions.slice(start, step)
        values = encode_transactions(chunk)
        keys = chunk["card_id"].to_pylist()
        chunk_end_time = int(tx_time[min(start + step, n) - 1])
        # labels the bank learned before this chunk's last transaction go out first
        label_stop = int(np.searchsorted(label_time, chunk_end_time, side="left"))
        if labels is not None and label_stop > next_label:
            _send_labels(labels.slice(next_label, label_stop - next_label), topics.labels, send)
            next_label = label_stop
        _pace(start, chunk_end_time - first_event, started, rate, speedup)
        for key, value in zip(keys, values, strict=True):
            send(topics.transactions, key.encode(), value)
        producer.poll(0)
        on_progress(chunk.num_rows)
    if labels is not None and next_label < labels.num_rows:
        _send_labels(labels.slice(next_label), topics.labels, send)
    producer.flush()
    return ReplaySummary(
        transactions=n,
        labels=0 if labels is None else labels.num_rows,
        seconds=time.monotonic() - started,
        failed=failures[0],
        client_errors=dict(client_errors.by_name),
    )


def _send_labels(labels: pa.Table, topic: str, send: Callable[[str, bytes, bytes], None]) -> None:
    for key, value in zip(labels["transaction_id"].to_pylist(), encode_labels(labels), strict=True):
        send(topic, key.encode(), value)


def _pace(
    sent: int, event_offset_ms: int, started: float, rate: float | None, speedup: float | None
) -> None:
    """Sleep until the wall clock allows the next chunk."""
    due = 0.0
    if rate is not None:
        due = sent / rate
    elif speedup is not None:
        due = event_offset_ms / 1000.0 / speedup
    wait = started + due - time.monotonic()
    if wait > 0:
        time.sleep(wait)
