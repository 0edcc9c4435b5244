"""The API's Kafka side: produce transactions and labels, read every decision back.

Request/reply over the existing topics (docs/api.md, "Why request/reply over the topics"):

* transactions go to ``transactions`` keyed by card id, from an idempotent producer (acks=all,
  murmur2 partitioning like every keyed producer of the project, ``linger.ms`` from
  ``api.producer_linger_ms``, delivery reports for failures only), exactly as the stream expects
  them; the stream needs no reply-topic plumbing; labels from a second producer, whose every
  report is awaited;
* one consumer thread per replica reads **every partition** of ``decisions`` (no consumer group;
  ``api.decisions_isolation``, read_uncommitted by default: see ``DecisionHub._supersede``) plus
  ``labels`` (for analyst verdicts given on other replicas) and ``model-updates`` (hot swaps),
  and hands each batch to the asyncio loop with
  ``loop.call_soon_threadsafe``. Any replica therefore sees any decision — whichever replica the
  stream's decision is meant for, and however many replicas run — at the price of every replica
  reading all decisions (~1 KB each; a replica reads 10k decisions/s with a few % of a core).

At start the consumer reads back ``api.decision_window_s`` of ``decisions`` and ``labels`` (by
timestamp), so a restarted replica can serve recent decisions, idempotent resends and the review
queue again; it reports ready once every one of their partitions has been read to its end
(librdkafka's end-of-partition event). Not sooner: a replica that took the first recent record
for "caught up" said ready while a busier partition was still being read, and a resend of one of
its transactions would have gone to the stream again and been decided twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from api.hub import AnalystVerdict, DecisionHub, StreamDecision
from scoring.settings import KafkaSettings

if TYPE_CHECKING:
    from confluent_kafka import Consumer, KafkaError, Message, Producer

    from api.serving import ModelService

log = logging.getLogger("fraudstream.api.kafka")

# Base topic names of DESIGN.md §3 (mirrors stream/topics.py; api/ may not import stream/).
TRANSACTIONS = "transactions"
DECISIONS = "decisions"
LABELS = "labels"
MODEL_UPDATES = "model-updates"
# librdkafka's default partitioner differs from the Java clients' and aiokafka's murmur2: a card
# must land on the partition every other producer of the project would choose (stream/topics.py).
PRODUCER_PARTITIONER = "murmur2_random"

LABEL_DELIVERY_TIMEOUT_S = 5.0
METADATA_EVERY_S = 5.0
REACHABLE_FOR_S = 15.0  # broker answered within this long: "reachable" for /readyz


class _DecisionKeys(msgspec.Struct):
    """What the API needs of a decision record; the value itself is kept as bytes."""

    transaction_id: str
    bank_id: str | None = None
    action: str = ""
    decided_at: str = ""


class _LabelKeys(msgspec.Struct):
    transaction_id: str
    is_fraud: bool
    reported_at: str | int
    bank_id: str | None = None
    source: str | None = None


_DECISION_DECODER = msgspec.json.Decoder(_DecisionKeys)
_LABEL_DECODER = msgspec.json.Decoder(_LabelKeys)


class LabelNotDeliveredError(Exception):
    """The broker did not take a label (in time); nothing was recorded."""


class KafkaLink:
    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        lookback_s: float,
        models: ModelService | None = None,
        isolation: str = "read_committed",
        linger_ms: float = 1.0,
    ) -> None:
        self.kafka = kafka
        self.linger_ms = linger_ms
        self.isolation = isolation
        self.lookback_s = lookback_s
        self.models = models
        self.transactions = kafka.topic(TRANSACTIONS)
        self.decisions = kafka.topic(DECISIONS)
        self.labels = kafka.topic(LABELS)
        self.model_updates = kafka.topic(MODEL_UPDATES)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._hub: DecisionHub | None = None
        self._producer: Producer | None = None  # transactions
        self._label_producer: Producer | None = None
        self._running = threading.Event()
        self._threads: list[threading.Thread] = []
        self._reachable_at = 0.0
        self._last_error = ""
        self._assigned = False
        self._caught_up = False
        self._consumer_beat = time.monotonic()
        # the read-back's partitions not yet read to their end (consumer thread only)
        self._behind: set[tuple[str, int]] = set()

    # ------------------------------------------------------------------------------ lifecycle

    def start(self, loop: asyncio.AbstractEventLoop, hub: DecisionHub) -> None:
        from confluent_kafka import Producer

        self._loop = loop
        self._hub = hub
        common = {
            **self.kafka.client_config(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": self.linger_ms,
            "partitioner": PRODUCER_PARTITIONER,
            "error_cb": self._on_client_error,
        }
        self._producer = Producer(
            {
                **common,
                # A transaction that could not reach the broker for this long has long been
                # answered by the fallback; do not let it reach the stream minutes later.
                "message.timeout.ms": 30_000,
                # Only failures call back: a report per transaction would wake the producer
                # thread, and take the GIL from the event loop, hundreds of times a second.
                "delivery.report.only.error": True,
            }
        )
        # Labels are acknowledged to the bank only once Kafka has them: every report counts.
        self._label_producer = Producer(common)
        self._running.set()
        for name, target in (("api-decisions", self._consume), ("api-producer", self._serve)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        self._running.clear()
        for thread in self._threads:
            thread.join(timeout=10)
        for producer in (self._producer, self._label_producer):
            if producer is not None:
                left = producer.flush(5)
                if left:
                    log.warning("%d messages not delivered at shutdown", left)
        # the last references: librdkafka's threads stop with them
        self._producer = self._label_producer = None

    # ------------------------------------------------------------------------------ producing

    def send_transaction(self, key: bytes, value: bytes, on_failed: Callable[[str], None]) -> None:
        assert self._producer is not None

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                self._call(on_failed, error.str())

        self._producer.produce(self.transactions, value, key, on_delivery=delivered)

    async def send_label(self, key: bytes, value: bytes) -> None:
        assert self._label_producer is not None and self._loop is not None
        done: asyncio.Future[None] = self._loop.create_future()

        def delivered(error: KafkaError | None, _message: Message) -> None:
            self._call(_settle, done, None if error is None else error.str())

        try:
            self._label_producer.produce(self.labels, value, key, on_delivery=delivered)
        except (BufferError, RuntimeError) as exc:
            raise LabelNotDeliveredError(str(exc)) from None
        except Exception as exc:  # KafkaException: unknown topic, fatal producer error
            raise LabelNotDeliveredError(str(exc)) from None
        try:
            await asyncio.wait_for(asyncio.shield(done), LABEL_DELIVERY_TIMEOUT_S)
        except TimeoutError:
            raise LabelNotDeliveredError(
                f"not acknowledged within {LABEL_DELIVERY_TIMEOUT_S:g} s"
            ) from None

    def _serve(self) -> None:
        """Delivery reports, and a metadata request now and then: is the broker reachable?"""
        assert self._producer is not None and self._label_producer is not None
        checked = 0.0
        while self._running.is_set():
            self._producer.poll(0.025)  # failed transactions only
            self._label_producer.poll(0.025)
            now = time.monotonic()
            if now - checked >= METADATA_EVERY_S:
                checked = now
                try:
                    self._producer.list_topics(self.transactions, timeout=2.0)
                    self._reachable_at = time.monotonic()
                except Exception as exc:  # KafkaException: unreachable, auth, ...
                    self._last_error = str(exc)

    # ------------------------------------------------------------------------------ consuming

    def _consume(self) -> None:
        from confluent_kafka import Consumer

        consumer = Consumer(
            {
                **self.kafka.client_config(),
                # assign() only: the group is never joined and nothing is committed.
                "group.id": f"fraudstream-api-{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                # read_uncommitted (the default of api.decisions_isolation): a decision is read
                # as soon as the worker produced it, not after its Kafka transaction commits.
                "isolation.level": self.isolation,
                "auto.offset.reset": "latest",
                "fetch.wait.max.ms": self.kafka.fetch_wait_max_ms,
                # "caught up" = every partition of the read-back reached its end once
                "enable.partition.eof": True,
                "error_cb": self._on_client_error,
            }
        )
        try:
            while self._running.is_set():
                self._consumer_beat = time.monotonic()
                if not self._assigned:
                    self._assign(consumer)
                    continue
                # consume(n, timeout) waits until it has n messages or the timeout passes: a
                # decision would sit up to the timeout in the client. Wait for the first message
                # only, then take what else is already there.
                first = consumer.poll(0.05)
                messages = [] if first is None else [first, *consumer.consume(999, 0)]
                if messages:
                    self._route(messages)
                if self.models is not None:
                    self.models.poll()
        finally:
            consumer.close()

    def _assign(self, consumer: Consumer) -> None:
        from confluent_kafka import OFFSET_END, TopicPartition

        try:
            metadata = consumer.list_topics(timeout=5.0)
            since_ms = int((time.time() - self.lookback_s) * 1000)
            wanted = []
            for topic in (self.decisions, self.labels):
                described = metadata.topics.get(topic)
                if described is None or described.error is not None or not described.partitions:
                    raise RuntimeError(f"topic {topic} does not exist (fraudstream kafka topics)")
                wanted += [TopicPartition(topic, p, since_ms) for p in described.partitions]
            # offsets_for_times: the first offset at or after the time, or END when none.
            start = consumer.offsets_for_times(wanted, timeout=10.0)
            assignment = [
                TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
                for tp in start
            ]
            if self.model_updates in metadata.topics:
                assignment.append(TopicPartition(self.model_updates, 0, OFFSET_END))
            consumer.assign(assignment)
        except Exception as exc:  # KafkaException or a missing topic: try again shortly
            self._last_error = str(exc)
            log.warning("cannot read %s yet: %s", self.decisions, exc)
            time.sleep(1.0)
            return
        self._assigned = True
        # A partition with nothing since the window began starts at its end: nothing to wait for.
        self._behind = {(tp.topic, tp.partition) for tp in start if tp.offset >= 0}
        self._reachable_at = time.monotonic()
        self._note_caught_up()

    def _route(self, messages: list[Message]) -> None:
        from confluent_kafka import KafkaError

        decisions: list[StreamDecision] = []
        verdicts: list[AnalystVerdict] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._behind.discard((message.topic(), message.partition()))
                elif error.fatal():
                    self._last_error = error.str()
                    log.error("decisions consumer: %s", error.str())
                continue
            value = message.value()
            topic = message.topic()
            stamp_ms = message.timestamp()[1]
            if value is None:
                continue
            if topic == self.decisions:
                decision = _decision(value, stamp_ms)
                if decision is not None:
                    decisions.append(decision)
            elif topic == self.labels:
                verdict = _verdict(value)
                if verdict is not None:
                    verdicts.append(verdict)
            elif topic == self.model_updates and self.models is not None:
                self.models.offer(value)
        assert self._hub is not None
        if decisions:
            self._call(self._hub.on_stream_decisions, decisions)
        if verdicts:
            self._call(self._hub.on_analyst_verdicts, verdicts)
        self._note_caught_up()
        self._reachable_at = time.monotonic()

    def _note_caught_up(self) -> None:
        if not self._caught_up and not self._behind:
            # After the batch's hand-over was queued on the loop: a request the loop serves after
            # /readyz said ready finds everything read back.
            self._caught_up = True
            log.info("caught up with %s and %s", self.decisions, self.labels)

    # ------------------------------------------------------------------------------- status

    def status(self) -> tuple[bool, str]:
        """For /readyz: the broker answers, and the decisions read-back has caught up."""
        silent = time.monotonic() - self._reachable_at
        if not self._assigned:
            return False, f"not reading {self.decisions} yet: {self._last_error or 'starting'}"
        if silent > REACHABLE_FOR_S:
            return False, f"Kafka unreachable for {silent:.0f} s: {self._last_error}"
        if not self._caught_up:
            behind = len(self._behind)
            return False, (
                f"reading back {self.lookback_s:g} s of {self.decisions} and {self.labels}: "
                f"{behind} partition{'' if behind == 1 else 's'} not read to the end yet"
            )
        return True, f"reading {self.decisions}"

    def alive(self) -> tuple[bool, str]:
        """For /healthz: both Kafka threads are running and the consumer loop turns."""
        dead = [t.name for t in self._threads if not t.is_alive()]
        if dead:
            return False, f"threads stopped: {', '.join(dead)}"
        silent = time.monotonic() - self._consumer_beat
        return silent < 60.0, f"decisions consumer last turned {silent:.1f} s ago"

    # ------------------------------------------------------------------------------ helpers

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (shutdown)
            loop.call_soon_threadsafe(fn, *args)

    def _on_client_error(self, error: KafkaError) -> None:
        self._last_error = error.str()
        log.info("kafka client: %s", error.str())


def _settle(done: asyncio.Future[None], error: str | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(LabelNotDeliveredError(error))


def _decision(value: bytes, stamp_ms: int) -> StreamDecision | None:
    try:
        keys = _DECISION_DECODER.decode(value)
    except msgspec.DecodeError:
        log.warning("skipping an unreadable record on decisions")
        return None
    if keys.bank_id is None:
        return None  # no bank: no API caller can ask for it
    return StreamDecision(
        keys.bank_id, keys.transaction_id, keys.action, keys.decided_at, value, stamp_ms / 1000.0
    )


def _verdict(value: bytes) -> AnalystVerdict | None:
    try:
        keys = _LABEL_DECODER.decode(value)
    except msgspec.DecodeError:
        return None
    if keys.source != "analyst" or keys.bank_id is None:
        return None
    label = msgspec.json.decode(value)
    return AnalystVerdict(keys.bank_id, keys.transaction_id, keys.is_fraud, label)
