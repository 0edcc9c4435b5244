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
            for message in consumer.consume(5000, 0.5):
                where_from = (str(message.topic()), int(message.partition() or 0))
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(where_from)
                    continue
                records += 1
                where = f"{where_from[0]}/{where_from[1]}/{message.offset()}"
                parts: list[tuple[str, Any]] = [("key", message.key()), ("value", message.value())]
                headers: Any = message.headers() or []
                parts += [(f"header {k}", v) for k, v in headers]
                for part, data in parts:
                    raw = data.encode() if isinstance(data, str) else data or b""
                    for hit in find_card_numbers(raw):
                        found.append(FoundIn(f"{where} {part}", hit))
        if pending:
            raise TimeoutError(f"card scan: did not reach the end of {sorted(pending)}")
    finally:
        consumer.close()
    return found, records
