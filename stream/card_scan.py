"""Card numbers in Kafka: every record (key, value, headers) of a deployment's topics.

The reading side of the card-data scan (docs/security.md); the finding rules are
:func:`scoring.card_data.find_card_numbers`. Reads ``read_uncommitted`` from the start of every
partition to its end offset, so records of aborted transactions are scanned too: they are stored
on the broker's disks like any other.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from scoring.card_data import FoundIn, find_card_numbers
from scoring.settings import KafkaSettings


def scan_topics(
    kafka: KafkaSettings, topics: list[str] | None = None, *, timeout_s: float = 120.0
) -> tuple[list[FoundIn], int]:
    """Card numbers in ``topics`` (default: every topic whose name starts with the settings'
    prefix, internal ones excluded), and how many records were read."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"card-scan-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",
            "auto.offset.reset": "earliest",
            # the end of a partition is an event: its last offsets may be transaction markers,
            # which are never delivered as records
            "enable.partition.eof": True,
        }
    )
    found: list[FoundIn] = []
    records = 0
    try:
        metadata = consumer.list_topics(timeout=30)
        names = topics or sorted(
            name
            for name in metadata.topics
            if name.startswith(kafka.topic_prefix) and not name.startswith("__")
        )
        pending: set[tuple[str, int]] = set()
        for name in names:
            for partition in consumer.list_topics(name, timeout=30).topics[name].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(name, partition), 30)
                if high > low:
                    pending.add((name, partition))
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in pending])
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            batch = []
            for message in consumer.consume(5000, 0.5):
                error = message.error()
                if error is None:
                    batch.append(message)
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard((str(message.topic()), int(message.partition() or 0)))
            records += len(batch)
            found += _scan_batch(batch)
        if pending:
            raise TimeoutError(f"card scan: did not reach the end of {sorted(pending)}")
    finally:
        consumer.close()
    return found, records


def _parts(message: Any) -> list[tuple[str, bytes]]:
    parts: list[tuple[str, Any]] = [("key", message.key()), ("value", message.value())]
    parts += [(f"header {k}", v) for k, v in message.headers() or []]
    return [(part, data.encode() if isinstance(data, str) else data or b"") for part, data in parts]


def _scan_batch(batch: list[Any]) -> list[FoundIn]:
    """Every part (key, value, headers) of every record of ``batch``, scanned as one text, the
    parts joined by line breaks: the scanner's rules treat a line break next to a number exactly
    as the start or end of the data (no number spans one, none continues through one), so this
    finds what part-by-part scanning finds, with one call per batch instead of three per record
    (a demo's topics hold a few hundred thousand records). Only a batch with a hit is gone
    through again, part by part, to say where."""
    if not batch:
        return []
    blob = b"\n".join(data for message in batch for _part, data in _parts(message))
    if not find_card_numbers(blob):
        return []
    found = []
    for message in batch:
        where = f"{message.topic()}/{message.partition()}/{message.offset()}"
        for part, data in _parts(message):
            for hit in find_card_numbers(data):
                found.append(FoundIn(f"{where} {part}", hit))
    return found
