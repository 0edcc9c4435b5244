"""Publish and read model announcements on the ``model-updates`` topic (DESIGN.md §3).

The topic has one compacted partition (``stream.topics``): every worker and API replica reads all
of it, in one order, and compaction keeps the latest announcement per alias. Both functions use
partition 0 explicitly, so they agree even on a topic created with more partitions by hand.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from scoring.announcements import BadAnnouncement, ModelAnnouncement
from scoring.settings import KafkaSettings
from stream.client_errors import ClientErrors
from stream.topics import TopicNames

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Message, Producer
    from confluent_kafka.admin import TopicMetadata

log = logging.getLogger("fraudstream.announce")

PARTITION = 0
# Time flush() is given beyond message.timeout.ms: the delivery report of a message that timed out
# arrives on the next poll, and the verdict should be the broker's, not our impatience.
_REPORT_GRACE_S = 2.0
_METADATA_RETRY_S = 0.5


class AnnouncementError(Exception):
    """An announcement was not delivered, or the topic could not be read."""


def publish_announcement(
    kafka: KafkaSettings, announcement: ModelAnnouncement, *, timeout_s: float = 10.0
) -> None:
    """Produce ``announcement`` keyed by its alias and wait until the broker acknowledges it.

    Raises :class:`AnnouncementError` (with the broker's error) when the topic does not exist or
    the record is not acknowledged within about ``timeout_s`` seconds. The client gives the record
    up by then, so it is not sent after the failure is reported (one already in flight may have
    landed: announcing twice is harmless).
    """
    from confluent_kafka import KafkaError, KafkaException, Producer

    topic = TopicNames.from_settings(kafka).model_updates
    where = f"{topic} at {kafka.effective_bootstrap()}"
    client_errors = ClientErrors(log)
    config = {
        **kafka.client_config(),
        "enable.idempotence": True,
        "acks": "all",
        # librdkafka gives the message up after this (the default is 5 minutes of retrying).
        "message.timeout.ms": max(int(timeout_s * 1000), 100),
        # A broker with auto.create.topics.enable would otherwise create the topic on first use:
        # not compacted, with the data topics' partition count.
        "allow.auto.create.topics": False,
        **client_errors.config(),
    }
    outcome: list[KafkaError | None] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        outcome.append(error)

    producer: Producer | None = None
    try:
        producer = Producer(config)
        found = _topic_metadata(producer, topic, timeout_s)
        if found is None or (
            found.error is not None and found.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
        ):
            raise AnnouncementError(
                f"{where}: the topic does not exist (create it: fraudstream kafka topics)"
            )
        producer.produce(
            topic,
            key=announcement.key(),
            value=announcement.to_bytes(),
            partition=PARTITION,
            on_delivery=delivered,
        )
        remaining = producer.flush(timeout_s + _REPORT_GRACE_S)
    except (KafkaException, BufferError, ValueError) as exc:
        if producer is not None:
            producer.poll(0)  # serves error_cb: the connection errors behind this one
        raise AnnouncementError(
            f"cannot produce to {where}: {_text(exc)}{client_errors.suffix()}"
        ) from exc
    if remaining or not outcome:
        reason = f"no acknowledgement within {timeout_s:g} s"
    elif outcome[0] is not None:
        reason = outcome[0].str()
    else:
        log.info("announced %s -> %s on %s", announcement.alias, announcement.version, topic)
        return
    raise AnnouncementError(f"not delivered to {where}: {reason}{client_errors.suffix()}")


def read_announcements(kafka: KafkaSettings, *, timeout_s: float = 10.0) -> list[ModelAnnouncement]:
    """Every announcement on the topic, oldest first (what compaction has kept of it).

    Reads from the beginning up to the end as it is when called. Records that do not decode are
    logged and skipped (so are tombstones). Raises :class:`AnnouncementError` when the topic
    cannot be read to its end within ``timeout_s`` seconds (e.g. it does not exist).
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException
    from confluent_kafka import TopicPartition as Partition

    topic = TopicNames.from_settings(kafka).model_updates
    where = f"{topic} at {kafka.effective_bootstrap()}"
    deadline = time.monotonic() + timeout_s
    client_errors = ClientErrors(log)
    try:
        consumer = Consumer(
            {
                **kafka.client_config(),
                # assign() without commits: the group is never joined, but librdkafka wants a name.
                "group.id": "fraudstream-announcement-reader",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                **client_errors.config(),
            }
        )
    except (KafkaException, ValueError) as exc:
        raise AnnouncementError(f"cannot read {where}: {_text(exc)}") from exc
    announcements: list[ModelAnnouncement] = []
    try:
        low, high = consumer.get_watermark_offsets(
            Partition(topic, PARTITION), timeout=timeout_s, cached=False
        )
        if high <= low:
            return []
        consumer.assign([Partition(topic, PARTITION, OFFSET_BEGINNING)])
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AnnouncementError(
                    f"cannot read {where}: not at its end (offset {high}) after {timeout_s:g} s"
                    f"{client_errors.suffix()}"
                )
            message = consumer.poll(min(left, 1.0))
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise AnnouncementError(f"cannot read {where}: {error.str()}")
            offset = message.offset() or 0
            decoded = _decode(message, where)
            if decoded is not None:
                announcements.append(decoded)
            if offset >= high - 1:
                return announcements
    except KafkaException as exc:
        consumer.poll(0)  # serves error_cb: the connection errors behind this one
        raise AnnouncementError(
            f"cannot read {where}: {_text(exc)}{client_errors.suffix()}"
        ) from exc
    finally:
        consumer.close()


def _topic_metadata(producer: Producer, topic: str, timeout_s: float) -> TopicMetadata | None:
    """The topic's metadata; asks again until ``timeout_s`` while the cluster does not answer
    (a broker restarting), so a blip does not fail the announcement at once."""
    from confluent_kafka import KafkaError, KafkaException

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            left = max(deadline - time.monotonic(), 0.1)
            return producer.list_topics(topic, timeout=left).topics.get(topic)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if (
                isinstance(error, KafkaError) and error.fatal()
            ) or time.monotonic() + _METADATA_RETRY_S >= deadline:
                raise
            time.sleep(_METADATA_RETRY_S)


def _decode(message: Message, where: str) -> ModelAnnouncement | None:
    value = message.value()
    if value is None:
        log.info(
            "%s offset %s: tombstone for key %r, skipped", where, message.offset(), message.key()
        )
        return None
    try:
        return ModelAnnouncement.from_bytes(value)
    except BadAnnouncement as exc:
        log.warning("%s offset %s: skipped: %s", where, message.offset(), exc)
        return None


def _text(exc: Exception) -> str:
    """A client exception as a sentence (a KafkaException's str() is the KafkaError's repr)."""
    from confluent_kafka import KafkaError

    first = exc.args[0] if exc.args else exc
    return first.str() if isinstance(first, KafkaError) else str(first)
