"""The trainer's Kafka side: reading its three input topics, announcing promotions.

``training`` may not import ``stream`` (DESIGN.md §1), so the announcement producer is a small one
of its own here, doing what ``stream.announce.publish_announcement`` does for the command line:
the record keyed by the alias on partition 0 of the compacted ``model-updates`` topic, idempotent,
``acks=all``, and an error unless the broker acknowledged it. The format is
:class:`scoring.announcements.ModelAnnouncement`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from scoring.announcements import ModelAnnouncement
from scoring.features import NUM_FEATURES
from scoring.settings import KafkaSettings

log = logging.getLogger("fraudstream.trainer")

# Base topic names (stream.topics owns them; the contract is DESIGN.md §3).
TRANSACTIONS = "transactions"
FEATURE_LOG = "feature-log"
LABELS = "labels"
MODEL_UPDATES = "model-updates"
ANNOUNCE_PARTITION = 0


class AnnounceError(Exception):
    """The announcement was not acknowledged by the broker."""


def announce(
    kafka: KafkaSettings, announcement: ModelAnnouncement, *, timeout_s: float = 10.0
) -> None:
    """Produce ``announcement`` and wait for the broker's acknowledgement."""
    topic = kafka.topic(MODEL_UPDATES)
    errors: list[KafkaError] = []
    outcome: list[KafkaError | None] = []
    producer = Producer(
        {
            **kafka.client_config(),
            "enable.idempotence": True,
            "acks": "all",
            "message.timeout.ms": max(int(timeout_s * 1000), 100),
            "allow.auto.create.topics": False,  # it must be the compacted, one-partition topic
            "error_cb": errors.append,
            "log_level": 2,
        }
    )
    try:
        producer.produce(
            topic,
            key=announcement.key(),
            value=announcement.to_bytes(),
            partition=ANNOUNCE_PARTITION,
            on_delivery=lambda error, _message: outcome.append(error),
        )
        remaining = producer.flush(timeout_s + 2.0)
    except (KafkaException, BufferError) as exc:
        raise AnnounceError(f"cannot produce to {topic}: {exc}") from exc
    if remaining or not outcome:
        last = f" (last client error: {errors[-1].str()})" if errors else ""
        raise AnnounceError(f"{topic}: no acknowledgement within {timeout_s:g} s{last}")
    if outcome[0] is not None:
        raise AnnounceError(f"{topic}: {outcome[0].str()}")
    log.info("announced %s -> %s on %s", announcement.alias, announcement.version, topic)


@dataclass(frozen=True)
class FeatureRecords:
    """Decoded feature-log records (the valid ones)."""

    transaction_ids: list[str]
    bank_ids: list[str | None]
    model_versions: list[str | None]
    scores: np.ndarray
    features: np.ndarray  # float64 [n, NUM_FEATURES]; JSON null → NaN
    kafka_ms: np.ndarray
    rejected: int


def decode_feature_log(messages: Sequence[Message]) -> FeatureRecords:
    """``{"transaction_id", "bank_id", "model_version", "score", "features": [66 floats or
    null]}`` (scoring.messages.feature_log_records; extra fields are ignored). A record of
    another length (another feature schema) or without an id is skipped and counted."""
    ids: list[str] = []
    banks: list[str | None] = []
    versions: list[str | None] = []
    scores: list[float] = []
    vectors: list[list[float | None]] = []
    kafka_ms: list[int] = []
    rejected = 0
    loads = orjson.loads
    for message in messages:
        try:
            record = loads(message.value() or b"")
            transaction_id = record["transaction_id"]
            vector = record["features"]
            if not isinstance(transaction_id, str) or len(vector) != NUM_FEATURES:
                raise ValueError("bad record")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            rejected += 1
            continue
        ids.append(transaction_id)
        bank = record.get("bank_id")
        banks.append(bank if isinstance(bank, str) else None)
        version = record.get("model_version")
        versions.append(version if isinstance(version, str) else None)
        score = record.get("score")
        scores.append(float(score) if isinstance(score, int | float) else np.nan)
        vectors.append(vector)
        kafka_ms.append(message.timestamp()[1])
    features, keep = _matrix(vectors)
    if len(keep) < len(vectors):  # a vector with something else than numbers or null
        rejected += len(vectors) - len(keep)
        ids = [ids[i] for i in keep]
        banks = [banks[i] for i in keep]
        versions = [versions[i] for i in keep]
        scores = [scores[i] for i in keep]
        kafka_ms = [kafka_ms[i] for i in keep]
    return FeatureRecords(
        transaction_ids=ids,
        bank_ids=banks,
        model_versions=versions,
        scores=np.asarray(scores, dtype=np.float64),
        features=features,
        kafka_ms=np.asarray(kafka_ms, dtype=np.int64),
        rejected=rejected,
    )


def _matrix(vectors: list[list[float | None]]) -> tuple[np.ndarray, list[int]]:
    """The vectors as one float64 matrix (null → NaN) and the positions that made it."""
    try:
        return np.array(vectors, dtype=np.float64).reshape(len(vectors), NUM_FEATURES), list(
            range(len(vectors))
        )
    except (TypeError, ValueError):
        keep: list[int] = []
        rows: list[np.ndarray] = []
        for i, vector in enumerate(vectors):
            try:
                rows.append(np.array(vector, dtype=np.float64))
            except (TypeError, ValueError):
                continue
            keep.append(i)
        return np.array(rows, dtype=np.float64).reshape(len(rows), NUM_FEATURES), keep
