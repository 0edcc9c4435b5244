"""``fraudstream worker``: transactions in, exactly one decision each out (docs/stream.md).

One loop, one thread (model loads and the status endpoints aside):

1. Poll the group membership consumer. It joins the ``stream.group_id`` group and owns a share of
   the ``transactions`` partitions, but never fetches; its assignment says which partitions this
   worker *decides*, and its group metadata fences zombies in Kafka transactions (KIP-447).
2. Take messages from the data consumer, which reads *every* partition of ``transactions`` and
   ``labels``: every worker keeps the whole feature state, so merchant and terminal features see all
   traffic and a takeover needs no state transfer.
3. Decode (msgspec), merge by event time (:mod:`stream.merge`), apply the released events to the
   feature engine, and for the transactions of owned partitions that are not decided yet: score,
   decide, and produce decision, feature-log and dead-letter records into the open Kafka
   transaction, which gathers the batches of ``stream.commit_interval_ms`` and then commits with
   their consumed offsets. Either all of a transaction's outputs and its offsets are committed, or
   none. The next batch never waits for a commit it does not need: like Kafka Streams' exactly-once
   ``commit.interval.ms``, the broker round trips of a commit are paid once per interval, not once
   per batch, and they run on a committer thread while the next batches go into a transaction of
   a second producer (docs/stream.md, "Pipelined commits").
4. Now and then, with no transaction open, checkpoint the state with the input offsets it reflects.

After a crash, a rebalance or an aborted transaction the worker restores the newest checkpoint not
ahead of the committed offsets and re-reads from there, producing only for offsets not yet
committed: the state and every decision are those of an uninterrupted run.
"""

from __future__ import annotations

import gc
import logging
import signal
import socket
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from scoring.card_data import mask_card_numbers
from scoring.decision import APPROVE, policy_from
from scoring.drift import WARN_PSI, DriftMonitor, reference_of
from scoring.features import FeatureEngine, catalog
from scoring.features.engine import EngineConfig
from scoring.logs import TIMESTAMP, TRANSACTION_SCHEMA
from scoring.messages import ERROR_HEADER, OutRecord, decision_records, feature_log_records
from scoring.model_swap import ModelFollower, SwapOutcome
from scoring.observability import StatusServer
from scoring.pipeline import BatchScorer, ScoredBatch
from scoring.reasons import prepare as prepare_reasons
from scoring.registry import LoadedModel, open_registry
from scoring.settings import Settings
from scoring.wire import decode_labels, decode_transactions
from stream.checkpoints import BackgroundWriter, CheckpointStore
from stream.label_index import LabelIndex, table_of
from stream.merge import LABELS, TRANSACTIONS, EventTimeMerge, RejectedMessage, SourceId, Step
from stream.metrics import WorkerMetrics
from stream.topics import PRODUCER_PARTITIONER, TopicNames
from stream.transactional import (
    ProducerUnavailableError,
    TransactionalProducer,
    TransactionStalledError,
)

log = logging.getLogger("fraudstream.worker")
SOURCE_HEADER = "fraudstream-source"  # topic/partition/offset of a dead letter's original
MASKED_HEADER = "fraudstream-masked"  # present when card numbers were masked in key or value
DAY_MS = 86_400_000
HIGH_REFRESH_S = 0.1  # how often an unknown end offset is asked of the broker
DRIFT_EXPORT_S = 10.0  # PSI over ~50k decayed rows moves slowly; no need to recompute it often
DRIFT_WARN_EVERY_S = 300.0


@dataclass
class WorkerStats:
    decisions: int = 0
    dead_letters: int = 0
    state_transactions: int = 0
    labels: int = 0
    restores: int = 0
    swaps: int = 0


class Worker:
    def __init__(
        self,
        settings: Settings,
        *,
        registry: Path | None = None,
        model_ref: str | None = None,
        instance_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.config = settings.stream
        self.instance = instance_id or self.config.instance_id or socket.gethostname()
        self.topics = TopicNames.from_settings(settings.kafka)
        self.metrics = WorkerMetrics()
        self.stats = WorkerStats()
        self.registry = open_registry(settings, registry)
        ref = model_ref or settings.scoring.model_ref
        model = self.registry.load(ref, allow_gtil=True)
        alias = ref if ref in self.registry.aliases() else None
        self.follower = ModelFollower(self.registry, alias, model.version)
        self.scorer = BatchScorer(
            model,
            policy_from(settings),
            cpu_second_usd=settings.scoring.cpu_second_usd,
            max_reasons=settings.scoring.max_reasons,
            reasons_method=settings.scoring.reasons_method,
        )
        prepare_reasons(model.booster, settings.scoring.reasons_method)
        self.metrics.serve_model(model.version)
        self.drift = _drift_monitor(model)
        self._drift_exported = time.monotonic()
        self._drift_warned = 0.0
        # Shadow mode: a second model (e.g. the challenger) scores every decided transaction
        # beside the served one, without acting; its scores go to the feature log.
        self.shadow: LoadedModel | None = None
        self.shadow_follower: ModelFollower | None = None
        if self.config.shadow_ref:
            self.shadow = self.registry.load(self.config.shadow_ref, allow_gtil=True)
            shadow_alias = (
                self.config.shadow_ref
                if self.config.shadow_ref in self.registry.aliases()
                else None
            )
            self.shadow_follower = ModelFollower(self.registry, shadow_alias, self.shadow.version)
            self.metrics.shadow_model_info.labels(version=self.shadow.version).set(1)
        # reserved: the card tables never need a growing copy (no ~2x peak at 10M cards)
        self.engine_config = EngineConfig.from_settings(settings).reserved()
        self.engine = FeatureEngine(self.engine_config)
        self.retention_ms = int(self.config.label_index_days * DAY_MS)
        self.index = LabelIndex(self.retention_ms)
        self.merge = EventTimeMerge(
            self.config.source_idle_ms, label_idle_ms=self.config.label_idle_ms
        )
        self.checkpoints = CheckpointStore(
            Path(self.config.state_dir) / self.instance,
            keep=self.config.checkpoints_kept,
            identity={
                "transactions": self.topics.transactions,
                "labels": self.topics.labels,
                "features": list(catalog.FEATURE_NAMES),
            },
        )
        self.checkpoint_writer = BackgroundWriter(self.checkpoints, self._checkpoint_saved)
        # Review and decline rows are explained here (TreeSHAP: ~2.3 ms a row, numba compiled
        # nogil, so without the GIL) while the loop goes on with the next batches: explaining on
        # the loop held every later transaction back by that much. The explanations' decisions
        # join the open Kafka transaction, which waits for them before it commits or aborts.
        self._explainer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reasons")
        # Commits run here while the loop goes on deciding into a transaction of the other
        # producer (docs/stream.md, "Pipelined commits").
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")
        self._count_lock = threading.Lock()
        self.owned: set[int] = set()
        self.committed: dict[int, int] = {}  # owned partition -> next offset to decide
        self._assignment_changed = False
        self._assigned_once = False
        self._restore_cause: str | None = None
        self._running = True
        self._ready = False
        self._heartbeat = time.monotonic()
        self._last_checkpoint = time.monotonic()
        self._recent = np.empty((0, catalog.NUM_FEATURES))
        self._highs_checked: dict[SourceId, float] = {}
        self._topic_partitions: dict[SourceId, TopicPartition] = {}
        self._late_reported = 0
        self._partitions: dict[str, int] = {}
        self._paused: set[SourceId] = set()
        self._evictions_reported: dict[tuple[str, str], int] = {}
        self._membership: Any = None
        self._membership_fatal: KafkaError | None = None
        self._txn: OpenTransaction | None = None  # the batches being decided go into it
        self._committing: OpenTransaction | None = None  # its commit is running on the committer
        self._data: Any = None
        self._producers: list[TransactionalProducer] = []
        self._status: StatusServer | None = None

    # ------------------------------------------------------------------------------ lifecycle

    def stop(self, *_: object) -> None:
        self._running = False

    @property
    def ready(self) -> bool:
        """State restored, model loaded, deciding (what /readyz reports)."""
        return self._ready

    def run(self, *, max_seconds: float | None = None) -> WorkerStats:
        """Serve until SIGTERM/SIGINT (or ``max_seconds``); returns what was done."""
        if _in_main_thread():
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        self._status = StatusServer(
            self.metrics.registry,
            self.config.http_host,
            self.config.http_port,
            healthy=self._healthy,
            ready=lambda: (self._ready, "ready" if self._ready else "starting"),
        ).start()
        self._connect()
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        try:
            self._wait_for_assignment()
            self._restore("start")
            _freeze_long_lived()
            self._ready = True
            log.info(
                "worker %s serving model %s, deciding partitions %s",
                self.instance,
                self.scorer.model.version,
                sorted(self.owned),
            )
            try:
                while self._running and (deadline is None or time.monotonic() < deadline):
                    self._iteration()
                if self._txn is not None:
                    self._commit_open()
                self._finish_commit()
            except ProducerUnavailableError:
                if self._running:
                    raise
                # Stopped while waiting for the broker: the open transaction is fenced by the
                # next incarnation, and no checkpoint is written of the state it ran ahead in.
                log.warning("stopping while the broker is away; the open transaction is dropped")
                self._restore_cause = "stalled"
            self.checkpoint_writer.wait()
            if self._restore_cause is None:  # not a state an aborted transaction ran ahead in
                self._write_checkpoint()
                self.checkpoint_writer.wait()
        finally:
            self._close()
        return self.stats

    def _connect(self) -> None:
        kafka = self.settings.kafka
        base = kafka.client_config()
        self._membership = self._membership_consumer()
        self._data = Consumer(
            {
                **base,
                # never commits: positions live in the checkpoints, decided offsets in the group
                "group.id": f"{self.config.group_id}.{self.instance}.reader",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": kafka.fetch_wait_max_ms,
                # Backpressure: librdkafka prefetches at most this much, whatever the backlog
                # (docs/stream.md, "Memory bounds"); the merge buffer is bounded by pausing.
                "queued.min.messages": 200_000,
                "queued.max.messages.kbytes": 65_536,
                "fetch.max.bytes": 52_428_800,
            }
        )
        producer_config = {
            **base,
            "enable.idempotence": True,
            "acks": "all",
            # a batch's records are produced in one burst: waiting longer adds latency only
            "linger.ms": 0.5,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
            # One transaction's outputs at most wait here (the commit waits for their
            # delivery); a full queue blocks produce (BufferError, retried) instead of growing.
            "queue.buffering.max.kbytes": 262_144,
            "transaction.timeout.ms": 60_000,
            "partitioner": PRODUCER_PARTITIONER,
        }
        # Two transactional producers, used in turn: one commits while the other takes the next
        # batches. Both ids are stable per worker, so a restarted worker fences both.
        transactional_id = f"{self.config.group_id}.{self.instance}"
        self._producers = [
            TransactionalProducer(
                {
                    **producer_config,
                    "transactional.id": f"{transactional_id}{tail}",
                },
                keep_waiting=lambda: self._running,
                on_stall=self._on_stall,
            )
            for tail in ("", ".1")
        ]
        for producer in self._producers:
            producer.start()  # fences an earlier incarnation of this instance
        metadata = self._data.list_topics(timeout=30)
        for topic in (self.topics.transactions, self.topics.labels, self.topics.model_updates):
            described = metadata.topics.get(topic)
            if described is None or described.error is not None or not described.partitions:
                raise RuntimeError(
                    f"topic {topic} does not exist; run `fraudstream kafka topics` first"
                )
            self._partitions[topic] = len(described.partitions)
        for kind, topic in ((TRANSACTIONS, self.topics.transactions), (LABELS, self.topics.labels)):
            for partition in range(self._partitions[topic]):
                self.merge.add_source(SourceId(kind, partition), 0)
        self._subscribe()

    def _membership_consumer(self) -> Consumer:
        return Consumer(
            {
                **self.settings.kafka.client_config(),
                "group.id": self.config.group_id,
                "group.instance.id": self.instance,  # static membership: a restart keeps its share
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "session.timeout.ms": self.config.session_timeout_ms,
                "partition.assignment.strategy": "range",
                "error_cb": self._on_membership_error,
            }
        )

    def _subscribe(self) -> None:
        self._membership.subscribe(
            [self.topics.transactions],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )

    def _still_owns(self, offsets: dict[int, int]) -> bool:
        """Serve the membership consumer first (a lost session revokes, a fenced member turns
        fatal), then: do we still own every partition of ``offsets``?"""
        event = self._membership.poll(0)
        if event is not None and event.error() is not None:
            self._on_membership_error(event.error())
        return self._membership_fatal is None and set(offsets) <= self.owned

    def _on_membership_error(self, error: KafkaError) -> None:
        # A consumer's fatal error comes out of poll() as an _FATAL event (librdkafka), not
        # always through error_cb: both lead here.
        if error.fatal() or error.code() == KafkaError._FATAL:
            self._membership_fatal = error
        else:  # the broker away for a while: librdkafka reconnects by itself
            log.debug("membership consumer: %s", error)

    def _rejoin(self) -> None:
        """Replace a membership consumer that hit a fatal error by a new one.

        Seen after a broker restart that outlasted the session timeout: the rejoining static
        member is answered FENCED_INSTANCE_ID (the restarted coordinator maps the instance id to
        another member id), a fatal error that leaves the consumer unusable and the worker owning
        nothing. A new consumer with the same ``group.instance.id`` replaces the stale member and
        gets the partitions back; no transaction is open (see _iteration), and the assignment check
        restores the state if it ran ahead of the group's offsets."""
        log.warning(
            "group membership failed (%s); rejoining as a new consumer", self._membership_fatal
        )
        old, self._membership_fatal = self._membership, None
        # Closing a fenced consumer can block while it tries to leave the group: not on our loop.
        threading.Thread(target=_close_quietly, args=(old,), daemon=True).start()
        self.owned, self.committed = set(), {}
        self._assigned_once = False
        self._membership = self._membership_consumer()
        self._subscribe()
        self._wait_for_assignment()
        self._check_assignment()

    def _close(self) -> None:
        self._explainer.shutdown(wait=True)
        self._committer.shutdown(wait=True)
        self.follower.close()
        if self.shadow_follower is not None:
            self.shadow_follower.close()
        for client in (self._membership, self._data):
            if client is not None:
                try:
                    client.close()
                except (KafkaException, RuntimeError) as exc:
                    log.warning("closing a consumer: %s", exc)
        for producer in self._producers:
            producer.flush(10)
        if self._status is not None:
            self._status.stop()

    def _healthy(self) -> tuple[bool, str]:
        silent = time.monotonic() - self._heartbeat
        return silent < 120.0, f"loop last turned {silent:.1f} s ago"

    # ---------------------------------------------------------------------- group membership

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.assign(partitions)
        consumer.pause(partitions)  # membership only: the data consumer reads
        self.owned = {p.partition for p in partitions}
        self._assignment_changed = True
        self._assigned_once = True

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Callbacks run inside poll: either between transactions (just stop deciding these
        # partitions) or in _still_owns before a commit, which then finds a partition gone and
        # aborts the transaction, whose decisions the new owner makes again.
        gone = {p.partition for p in partitions}
        self.owned -= gone
        for partition in gone:
            self.committed.pop(partition, None)
            self.metrics.drop_lag(partition)

    def _wait_for_assignment(self) -> None:
        deadline = time.monotonic() + max(60.0, 3 * self.config.session_timeout_ms / 1000)
        while not self._assigned_once:
            if not self._running or time.monotonic() > deadline:
                raise RuntimeError(f"no partition assignment from group {self.config.group_id}")
            self._membership.poll(0.1)
            self._heartbeat = time.monotonic()
        self._assignment_changed = False

    def _group_offsets(self) -> dict[int, int]:
        """Next offset to decide per owned partition (the group's committed offsets)."""
        if not self.owned:
            return {}
        asked = [TopicPartition(self.topics.transactions, p) for p in sorted(self.owned)]
        while True:
            try:
                answer = self._membership.committed(asked, timeout=30)
                break
            except KafkaException as exc:  # the broker is away: wait for it, as the commit does
                if not exc.args[0].retriable() or not self._running:
                    raise
                log.warning("asking the group's committed offsets: %s; asking again", exc)
                self._heartbeat = time.monotonic()
        return {tp.partition: max(tp.offset, 0) for tp in answer}

    def _check_assignment(self) -> None:
        self._assignment_changed = False
        if self._restore_cause is not None:
            return  # the restore that follows reads the group's offsets and rewinds anyway
        offsets = self._group_offsets()
        positions = self.merge.positions()
        ahead = [p for p, c in offsets.items() if positions[SourceId(TRANSACTIONS, p)] > c]
        if ahead:
            # The state has moved past events of a partition we now own that nobody decided
            # yet: rebuild it to just before them.
            self._restore("rebalance")
        else:
            self.committed = offsets
        log.info("deciding partitions %s", sorted(self.owned))

    # ---------------------------------------------------------------------- restore / checkpoint

    def _restore(self, cause: str) -> None:
        self.committed = self._group_offsets()
        owned = dict(self.committed)

        def acceptable(positions: dict[SourceId, int]) -> bool:
            return all(positions.get(SourceId(TRANSACTIONS, p), 0) <= c for p, c in owned.items())

        checkpoint = self.checkpoints.newest(acceptable)
        if checkpoint is not None:
            self.engine = FeatureEngine.restore(checkpoint.engine, config=self.engine_config)
            self.index = LabelIndex.from_table(checkpoint.label_index, self.retention_ms)
            positions = checkpoint.positions
            source = "checkpoint"
        else:
            self.engine = FeatureEngine(self.engine_config)
            self.index = LabelIndex(self.retention_ms)
            positions = {}
            source = "rebuild"
        self.merge.reset(positions)
        self._paused.clear()  # assign() below resumes every partition
        assignment = []
        for sid in self.merge.sources:
            topic = self.topics.transactions if sid.kind == TRANSACTIONS else self.topics.labels
            offset = positions.get(sid, OFFSET_BEGINNING)
            assignment.append(TopicPartition(topic, sid.partition, offset))
        assignment.append(TopicPartition(self.topics.model_updates, 0, OFFSET_END))
        self._data.assign(assignment)
        self._refresh_highs(ask_all=True)  # empty partitions are idle from the first batch on
        self.metrics.restores.labels(cause=cause, source=source).inc()
        self.stats.restores += 1
        if self._ready:
            _freeze_long_lived()  # the restored state is long-lived too
        log.info(
            "state %s from %s (%s); deciding %s from offsets %s",
            "restored" if checkpoint else "rebuilt",
            checkpoint.path.name if checkpoint else "the start of the topics",
            cause,
            sorted(self.owned),
            self.committed,
        )

    def _write_checkpoint(self) -> None:
        """Hand a checkpoint of the state as of now to the background writer (if it is free;
        else the next iteration tries again)."""
        if self.checkpoint_writer.busy:
            return
        mark = self.merge.released_bucket * catalog.ENTITY_BUCKET_MS
        if mark > 0:
            # The engine frees idle state itself, at event-time day starts (so its card count,
            # and any capacity eviction, are those of an offline replay); the index is ours.
            self.index.evict(mark)
        entries = self.index.entries()
        self.checkpoint_writer.submit(
            self.merge.positions(), self.engine.capture(), lambda: table_of(entries)
        )
        self._last_checkpoint = time.monotonic()

    def _checkpoint_saved(self, _path: Path) -> None:
        self.metrics.checkpoints.inc()

    # ----------------------------------------------------------------------------- the loop

    def _iteration(self) -> None:
        cpu_started = time.process_time()
        self._heartbeat = time.monotonic()
        if self._txn is not None and self._commit_wait() <= 0:
            self._commit_open()
        if self._committing is not None and self._committing.commit_done():
            self._finish_commit()
        if self._txn is None:
            # Group changes are taken between transactions only (at most commit_interval_ms
            # late), with no commit running: a revoked partition's decisions are then all
            # committed or all aborted, and the group's offsets are final.
            event = self._membership.poll(0)  # paused: only callbacks and errors come out
            if event is not None and event.error() is not None:
                self._on_membership_error(event.error())
            if self._membership_fatal or self._assignment_changed or self._restore_cause:
                self._finish_commit()
            if self._membership_fatal is not None:
                self._rejoin()
            if self._assignment_changed:
                self._check_assignment()
            if self._restore_cause is not None:
                cause, self._restore_cause = self._restore_cause, None
                self._restore(cause)
        self._maybe_swap_model()
        messages = self._take(min(self.config.poll_timeout_ms / 1000, self._commit_wait()))
        if messages:
            self._route(messages)
        self._refresh_highs()
        step = self.merge.take_ready()
        if not step.empty:
            self._apply(step)
            self._export_state()
        self._hold_back()
        if time.monotonic() - self._last_checkpoint >= self.config.checkpoint_interval_s:
            if self._txn is not None:
                # Its commit runs while the checkpoint is written: the checkpoint becomes usable
                # (not ahead of the group's offsets) once it lands. Should the commit fail, the
                # restore passes over this checkpoint for an older one.
                self._commit_open()
            if self._restore_cause is None:
                self._write_checkpoint()
        if time.monotonic() - self._drift_exported >= DRIFT_EXPORT_S:
            self._export_drift()
        self.metrics.cpu.inc(time.process_time() - cpu_started)

    def _take(self, timeout: float) -> list[Message]:
        """Wait for the first message, then up to ``batch_linger_ms`` for more. (``consume(n,
        timeout)`` alone would wait the whole ``poll_timeout_ms`` for n messages, delaying every
        decision of a light stream by that much.)"""
        first = self._data.poll(max(timeout, 0.0))
        if first is None:
            return []
        if self.config.batch_max == 1:
            return [first]
        linger = min(self.config.batch_linger_ms / 1000, max(self._commit_wait(), 0.0))
        return [first, *self._data.consume(self.config.batch_max - 1, linger)]

    def _commit_wait(self) -> float:
        """Seconds until the open transaction is due to commit (inf: none open)."""
        if self._txn is None:
            return float("inf")
        return self._txn.started + self.config.commit_interval_ms / 1000 - time.monotonic()

    def _route(self, messages: list[Message]) -> None:
        started = time.perf_counter()
        groups: dict[tuple[str, int], list[Message]] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer: %s", error)
                continue
            key = (message.topic() or "", message.partition() or 0)
            groups.setdefault(key, []).append(message)
        for (topic, partition), batch in groups.items():
            if topic == self.topics.transactions:
                self._add_transactions(partition, batch)
            elif topic == self.topics.labels:
                self._add_labels(partition, batch)
            else:
                for message in batch:
                    outcome = self.follower.offer(message.value(), self._canary_rows)
                    if self.shadow_follower is not None:
                        shadow = self.shadow_follower.offer(message.value(), self._canary_rows)
                        outcome = "loading" if "loading" in (outcome, shadow) else outcome
                    if outcome != "loading":
                        self.metrics.model_swaps.labels(outcome=outcome).inc()
        self.metrics.stage_of["decode"].observe(time.perf_counter() - started)

    def _add_transactions(self, partition: int, batch: list[Message]) -> None:
        sid = SourceId(TRANSACTIONS, partition)
        values = [m.value() or b"" for m in batch]
        table, positions, rejected = decode_transactions(values)
        rows = np.full(len(batch), -1, np.int64)
        rows[positions] = np.arange(len(positions))
        event_ms = np.zeros(len(batch), np.int64)
        event_ms[positions] = table.column("timestamp").cast(pa.int64()).to_numpy()
        self.merge.add(
            sid,
            np.fromiter((m.offset() for m in batch), np.int64, len(batch)),
            event_ms,
            rows,
            np.fromiter((m.timestamp()[1] for m in batch), np.int64, len(batch)),
            table,
            [self._rejected(sid, batch[r.index], r.reason) for r in rejected],
        )

    def _add_labels(self, partition: int, batch: list[Message]) -> None:
        sid = SourceId(LABELS, partition)
        values = [m.value() or b"" for m in batch]
        table, positions, rejected = decode_labels(values)
        rows = np.full(len(batch), -1, np.int64)
        rows[positions] = np.arange(len(positions))
        # A label takes effect at the end of the second it was reported in: same bucket.
        event_ms = np.zeros(len(batch), np.int64)
        event_ms[positions] = table.column("reported_at").cast(pa.int64()).to_numpy()
        for r in rejected:
            log.warning(
                "label %s/%d@%d rejected: %s",
                self.topics.labels,
                partition,
                batch[r.index].offset(),
                r.reason,
            )
        self.metrics.bad_labels.inc(len(rejected))
        self.merge.add(
            sid,
            np.fromiter((m.offset() for m in batch), np.int64, len(batch)),
            event_ms,
            rows,
            np.zeros(len(batch), np.int64),
            table,
            [],
        )

    @staticmethod
    def _rejected(sid: SourceId, message: Message, reason: str) -> RejectedMessage:
        offset = message.offset()
        assert offset is not None  # consumed messages have offsets
        return RejectedMessage(sid, offset, message.key(), message.value() or b"", reason)

    def _refresh_highs(self, *, ask_all: bool = False) -> None:
        """Each partition's end offset, for idleness: cached from fetches, asked when unknown
        (an empty partition never fetches anything)."""
        now = time.monotonic()
        for sid, source in self.merge.sources.items():
            tp = self._topic_partition(sid)
            _low, high = self._data.get_watermark_offsets(tp, cached=True)
            asked_ago = now - self._highs_checked.get(sid, 0.0)
            if ask_all or (high < 0 and asked_ago >= HIGH_REFRESH_S):
                self._highs_checked[sid] = now
                try:
                    _low, high = self._data.get_watermark_offsets(tp, timeout=1.0, cached=False)
                except KafkaException as exc:
                    log.debug("end offset of %s: %s", tp, exc)
            if high >= 0:
                source.high = high
            if sid.kind == TRANSACTIONS and sid.partition in self.owned:
                self.metrics.lag_of(sid.partition).set(max(source.high - source.processed_next, 0))
        released = max(self.merge.released_bucket, 0) * catalog.ENTITY_BUCKET_MS
        self.metrics.watermark.set(released / 1000.0)

    def _hold_back(self) -> None:
        """Backpressure: pause the partitions whose buffered messages wait for a slower partition
        (more than ``stream.max_buffered_messages``), resume them once the merge caught up."""
        held = self.merge.to_hold_back(self.config.max_buffered_messages)
        if held != self._paused:
            pause, resume = held - self._paused, self._paused - held
            if pause:
                self._data.pause([self._topic_partition(sid) for sid in pause])
            if resume:
                self._data.resume([self._topic_partition(sid) for sid in resume])
            self._paused = held
            self.metrics.paused.set(len(held))
        self.metrics.buffered.set(self.merge.buffered())

    def _topic_partition(self, sid: SourceId) -> TopicPartition:
        tp = self._topic_partitions.get(sid)  # kept: asked for every source every iteration
        if tp is None:
            topic = self.topics.transactions if sid.kind == TRANSACTIONS else self.topics.labels
            tp = self._topic_partitions[sid] = TopicPartition(topic, sid.partition)
        return tp

    def _export_state(self) -> None:
        engine = self.engine
        for entity, index in (
            ("card", engine.cards),
            ("merchant", engine.merchants),
            ("terminal", engine.terminals),
        ):
            self.metrics.state_entities_of[entity].set(len(index))
        self.metrics.state_bytes.set(engine.memory_bytes())
        for key, count in engine.evictions.items():
            # a restore can move the engine's count back; the counter only moves forward
            done = self._evictions_reported.get(key, 0)
            if count > done:
                self.metrics.state_evictions.labels(entity=key[0], reason=key[1]).inc(count - done)
            self._evictions_reported[key] = count

    # --------------------------------------------------------------------------- one step

    def _apply(self, step: Step) -> None:
        tx = step.transactions if step.transactions is not None else _EMPTY_TX
        started = time.perf_counter()
        cpu_started = time.thread_time()
        partitions, offsets, arrived = step.partitions, step.offsets, step.arrived_ms
        if tx.num_rows:
            resent = self.index.add(tx)
            if resent.any():  # a transaction id this bank already sent: decided once only
                self.metrics.resent.inc(int(resent.sum()))
                keep = np.flatnonzero(~resent)
                tx = tx.take(pa.array(keep))
                partitions, offsets, arrived = partitions[keep], offsets[keep], arrived[keep]
        label_events = None
        if step.labels is not None:
            unmatched = self.index.unmatched
            label_events = self.index.label_events(step.labels)
            self.metrics.unmatched_labels.inc(self.index.unmatched - unmatched)
            self.stats.labels += step.labels.num_rows
            self.metrics.state_events_of["label"].inc(step.labels.num_rows)
        features = self.engine.process(tx, label_events)
        features_cpu = time.thread_time() - cpu_started
        self.metrics.stage_of["features"].observe(time.perf_counter() - started)
        self.metrics.state_events_of["transaction"].inc(tx.num_rows)
        self.stats.state_transactions += tx.num_rows
        if tx.num_rows:
            self._recent = features[-self.config.canary_rows :]

        decide = self._undecided(partitions, offsets)
        outputs: list[tuple[str, list[OutRecord]]] = []
        decided_arrivals = np.empty(0)
        if decide.size:
            batch = tx.take(pa.array(decide))
            scored = self.scorer.decide(
                batch,
                features[decide],
                cpu_already=features_cpu * decide.size / max(tx.num_rows, 1),
                explain=False,
            )
            self.metrics.stage_of["model"].observe(scored.stage_seconds["model"])
            decided_arrivals = arrived[decide].astype(np.float64)
            # The approvals go out before the review and decline rows are explained (TreeSHAP:
            # ~2.3 ms a row), so that most of the batch does not wait for the explanations.
            approve = scored.decisions.action == APPROVE
            if approve.any():
                rows = np.flatnonzero(approve)
                approvals = scored.take(rows) if rows.size < approve.size else scored
                self._send_decisions(approvals, decided_arrivals[rows])
            if not approve.all():
                self._explain_in_background(scored, decided_arrivals[~approve])
            started = time.perf_counter()
            shadow = None
            if self.shadow is not None:
                shadow_scores = self.shadow.score_many(np.ascontiguousarray(features[decide]))
                shadow = (self.shadow.version, shadow_scores)
            outputs.append((self.topics.feature_log, feature_log_records(scored, shadow)))
            if self.drift is not None:
                self.drift.update(features[decide], scored.scores)
            self.metrics.stage_of["encode"].observe(time.perf_counter() - started)
        dead = [r for r in step.rejected if self._owns_undecided(r.source, r.offset)]
        if dead:
            outputs.append(
                (self.topics.transactions_dlq, [_dead_letter(r, self.topics) for r in dead])
            )
        commit_offsets = self._offsets_to_commit(step)
        if outputs or commit_offsets:
            self._add_to_transaction(outputs, commit_offsets)
        if self._txn is not None and self.config.commit_interval_ms <= 0:
            self._commit_open()
        if decide.size:
            now = time.time()
            for arrival in decided_arrivals:
                self.metrics.end_to_end.observe(max(now - arrival / 1000.0, 0.0))
            self.metrics.batch_size.observe(decide.size)
            self.metrics.events_out.inc(decide.size)
        self.metrics.events_in.inc(decide.size + len(dead))
        self.metrics.dlq.inc(len(dead))
        if self.merge.late > self._late_reported:
            self.metrics.late.inc(self.merge.late - self._late_reported)
            self._late_reported = self.merge.late
        self.stats.dead_letters += len(dead)

    def _undecided(self, partitions: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Rows of owned partitions at or after the group's committed offset."""
        if not self.owned or partitions.size == 0:
            return np.empty(0, np.int64)
        first = np.full(int(partitions.max()) + 1, np.iinfo(np.int64).max, np.int64)
        for partition, offset in self.committed.items():
            if partition < first.size:
                first[partition] = offset
        return np.flatnonzero(offsets >= first[partitions])

    def _owns_undecided(self, source: SourceId, offset: int) -> bool:
        if source.kind != TRANSACTIONS or source.partition not in self.owned:
            return False
        return offset >= self.committed.get(source.partition, np.iinfo(np.int64).max)

    def _offsets_to_commit(self, step: Step) -> dict[int, int]:
        return {
            sid.partition: offset
            for sid, offset in step.advanced.items()
            if sid.kind == TRANSACTIONS
            and sid.partition in self.committed
            and offset > self.committed[sid.partition]
        }

    def _send_decisions(self, scored: ScoredBatch, arrived_ms: np.ndarray) -> None:
        self._add_to_transaction([(self.topics.decisions, self._encode(scored, arrived_ms))], {})
        self._count_decisions(scored)

    def _encode(self, scored: ScoredBatch, arrived_ms: np.ndarray) -> list[OutRecord]:
        started = time.perf_counter()
        latency = np.maximum(time.time() * 1000.0 - arrived_ms, 0.0)
        records = decision_records(scored, latency)
        self.metrics.stage_of["encode"].observe(time.perf_counter() - started)
        return records

    def _explain_in_background(self, scored: ScoredBatch, arrived_ms: np.ndarray) -> None:
        """Explain the batch's review and decline rows on the explainer thread, which produces
        their decisions into the open transaction (begun here if the batch had no approvals)."""
        self._add_to_transaction([], {})
        txn = self._txn
        if txn is None:
            return  # the transaction aborted: the batch is redone after the restore
        model = self.scorer.model  # the one that scored the batch, even if swapped meanwhile
        producer = txn.producer
        assert model.version == scored.model_version

        def explain_and_send() -> ScoredBatch:
            explained = self.scorer.explain_flagged(scored, model)
            self.metrics.stage_of["reasons"].observe(explained.stage_seconds["reasons"])
            producer.produce(self.topics.decisions, self._encode(explained, arrived_ms))
            return explained

        txn.explaining.append(self._explainer.submit(explain_and_send))

    def _settle_explanations(self, txn: OpenTransaction) -> KafkaException | None:
        """Wait for the explanations of ``txn``; their decisions are then in it. Returns a Kafka
        error one of them met (the transaction must abort); raises anything else (a bug: the
        worker stops, as it would have on the loop's own thread)."""
        failure: KafkaException | None = None
        pending, txn.explaining = txn.explaining, []
        for future in pending:
            try:
                self._count_decisions(future.result())
            except KafkaException as exc:
                failure = failure or exc
        return failure

    def _add_to_transaction(
        self, outputs: list[tuple[str, list[OutRecord]]], offsets: dict[int, int]
    ) -> None:
        """Produce outputs into the open transaction (begun if none is) and note the offsets they
        complete; the transaction commits once ``commit_interval_ms`` has passed."""
        if self._restore_cause is not None:
            return  # a transaction of this batch aborted: it is redone after the restore
        started = time.perf_counter()
        if self._txn is not None:
            producer = self._txn.producer
        else:  # a producer whose commit is not running (both are free when none is)
            busy = self._committing.producer if self._committing is not None else None
            producer = next(p for p in self._producers if p is not busy)
        try:
            if self._txn is None:
                producer.begin()
                self._txn = OpenTransaction(producer, time.monotonic())
            for topic, records in outputs:
                producer.produce(topic, records)
        except KafkaException as exc:
            txn, self._txn = self._txn, None
            if txn is not None:
                self._settle_explanations(txn)  # they must not produce into a later transaction
            self._abort(producer, exc)
            return
        self._txn.offsets.update(offsets)
        self.metrics.stage_of["produce"].observe(time.perf_counter() - started)

    def _commit_open(self) -> None:
        """Hand the open transaction to the committer thread. The loop goes on deciding into a
        transaction of the other producer meanwhile; commits stay in order, as this one starts
        only once the previous one has finished. A commit that fails aborts its transaction (by
        replacing the producer if a call stalled: stream/transactional.py), and the batches of
        both are redone after a restore."""
        txn, self._txn = self._txn, None
        assert txn is not None
        if not self._finish_commit():
            self._drop(txn)  # it was decided in the state that is being restored
            return
        if txn.offsets and not self._still_owns(txn.offsets):
            # Offsets sent with the metadata of a lost or fenced membership can make librdkafka's
            # transaction calls hang (seen in tests/chaos: a broker restart outlasting the
            # session): drop the transaction and redo it once the group has answered.
            log.warning("group membership lost before sending the offsets; redoing the batches")
            self._drop(txn)
            self._restore_cause = "membership"
            return
        topic = self.topics.transactions
        offsets = [TopicPartition(topic, p, o) for p, o in sorted(txn.offsets.items())]
        metadata = self._membership.consumer_group_metadata() if offsets else None
        txn.commit = self._committer.submit(self._commit, txn, offsets, metadata)
        self._committing = txn

    def _commit(
        self, txn: OpenTransaction, offsets: list[TopicPartition], metadata: object
    ) -> None:
        """On the committer thread: wait for the transaction's explanations, then commit it."""
        failed = self._settle_explanations(txn)
        if failed is not None:
            raise failed
        started = time.perf_counter()
        txn.producer.commit(offsets, metadata)
        self.metrics.stage_of["commit"].observe(time.perf_counter() - started)

    def _finish_commit(self) -> bool:
        """Wait for the running commit, if any. False if it failed: its transaction is aborted,
        and so is the open one (decided in the state that is now restored)."""
        txn, self._committing = self._committing, None
        if txn is None or txn.commit is None:
            return True
        try:
            txn.commit.result()
        except KafkaException as exc:
            self._abort(txn.producer, exc)
        except TransactionStalledError:
            self._restore_cause = "stalled"  # the new producer's epoch aborted the transaction
        else:
            # A partition revoked meanwhile is the new owner's now (it reads these offsets).
            self.committed.update({p: o for p, o in txn.offsets.items() if p in self.owned})
            return True
        if self._txn is not None:
            open_txn, self._txn = self._txn, None
            self._drop(open_txn)
        return False

    def _drop(self, txn: OpenTransaction) -> None:
        """Abort a transaction whose batches are redone after the pending restore."""
        self._settle_explanations(txn)  # they must not produce into a later transaction
        txn.producer.abort()

    def _abort(self, producer: TransactionalProducer, exc: KafkaException) -> None:
        """An abortable transaction error: abort, restore the state, redo the batches. Anything
        else (e.g. fenced by a newer incarnation) is raised: stop, the supervisor restarts."""
        error = exc.args[0]
        if not error.txn_requires_abort():
            raise exc
        log.warning("transaction aborted (%s); restoring state and redoing it", error)
        producer.abort()
        self._restore_cause = "abort"

    def _on_stall(self, what: str, why: str) -> None:
        self.metrics.transaction_stalls.inc()
        log.warning(
            "%s the Kafka transaction stalled (%s); replacing the producer and redoing the "
            "transaction from a checkpoint",
            what,
            why,
        )
        self._heartbeat = time.monotonic()  # waiting on the broker is not a hang

    def _count_decisions(self, scored: ScoredBatch) -> None:
        """On the loop (approvals) and on the committer thread (explained rows): locked, as
        ``stats.decisions += n`` is not atomic."""
        with self._count_lock:
            banks = [b or "" for b in scored.transactions.column("bank_id").to_pylist()]
            pairs = Counter(zip(banks, scored.decisions.action_names(), strict=True))
            for (bank, action), count in pairs.items():
                self.metrics.decisions_of(bank, action).inc(count)
            d = scored.decisions
            self.metrics.cost_of["expected_fraud_loss"].inc(float(d.expected_fraud_loss.sum()))
            self.metrics.cost_of["review"].inc(float(d.review_cost.sum()))
            self.metrics.cost_of["friction"].inc(float(d.friction_cost.sum()))
            n = scored.transactions.num_rows
            self.metrics.cost_of["compute"].inc(scored.compute_usd_per_transaction * n)
            self.stats.decisions += n

    # ---------------------------------------------------------------------------- models

    def _canary_rows(self) -> np.ndarray:
        return self._recent.copy()

    def _maybe_swap_model(self) -> None:
        outcome = self.follower.ready(self._canary_rows)
        if outcome is not None and self._accept(outcome, self.scorer.model.version):
            assert outcome.model is not None
            self.scorer.swap_model(outcome.model)
            self.metrics.serve_model(outcome.model.version)
            self.drift = _drift_monitor(outcome.model)  # drift is against the new training data
            prepare_reasons(outcome.model.booster, self.settings.scoring.reasons_method)
            self.metrics.drift_psi.clear()
        if self.shadow_follower is not None and self.shadow is not None:
            outcome = self.shadow_follower.ready(self._canary_rows)
            if outcome is not None and self._accept(outcome, self.shadow.version):
                assert outcome.model is not None
                self.shadow = outcome.model
                self.metrics.shadow_model_info.clear()
                self.metrics.shadow_model_info.labels(version=outcome.model.version).set(1)

    def _export_drift(self) -> None:
        self._drift_exported = time.monotonic()
        if self.drift is None:
            return
        values = self.drift.psi()
        for name, value in values.items():
            self.metrics.drift_psi.labels(feature=name).set(value)
        shifted = sorted((v, k) for k, v in values.items() if v > WARN_PSI)
        if shifted and time.monotonic() - self._drift_warned > DRIFT_WARN_EVERY_S:
            self._drift_warned = time.monotonic()
            log.warning(
                "traffic has drifted from model %s's training data (PSI > %.2f): %s",
                self.scorer.model.version,
                WARN_PSI,
                ", ".join(f"{k} {v:.2f}" for v, k in reversed(shifted[-5:])),
            )

    def _accept(self, outcome: SwapOutcome, current: str) -> bool:
        """Log and count a finished load; True when its model is to be swapped in."""
        if outcome.model is not None:
            self.metrics.model_swaps.labels(outcome="swapped").inc()
            self.stats.swaps += 1
            log.info("model swapped: %s -> %s", current, outcome.model.version)
            return True
        if outcome.refused is not None:
            if outcome.refused.reason == "integrity":
                self.metrics.integrity_failures.inc()
            self.metrics.model_swaps.labels(outcome="refused").inc()
            log.error(
                "model %s refused (%s): %s; still serving %s",
                outcome.announcement.version,
                outcome.refused.reason,
                outcome.refused,
                current,
            )
        return False


_EMPTY_TX = pa.table(
    {f.name: pa.array([], f.type) for f in TRANSACTION_SCHEMA}, schema=TRANSACTION_SCHEMA
)
assert _EMPTY_TX.schema.field("timestamp").type == TIMESTAMP


def _freeze_long_lived() -> None:
    """Move every object alive now (numba, LightGBM, pyarrow, the restored label index) out of the
    cyclic garbage collector's reach. Why: each full collection walked them all and stopped the
    loop for 110-160 ms, ~every 3 s at 500 transactions/s (benchmarks/api_load.py with a GC
    callback): a deadline miss for every API transaction in flight. Frozen objects are still
    freed by reference counting when dropped (the label index's evicted tuples, a replaced
    engine); only a reference cycle among them would never be collected. The API does the same
    (api/app.py)."""
    gc.collect()
    gc.freeze()


def _drift_monitor(model: LoadedModel) -> DriftMonitor | None:
    """Drift against the model's training rows, if its manifest recorded them."""
    reference = reference_of(model.manifest.params)
    if reference is None:
        log.info("model %s has no drift reference; drift is not monitored", model.version)
        return None
    return DriftMonitor(reference, model.feature_names)


def _dead_letter(rejected: RejectedMessage, topics: TopicNames) -> OutRecord:
    """The rejected message with its reason; card numbers in its key or value are masked (a bank
    that sent a raw card number must not get it copied into a second topic)."""
    origin = f"{topics.transactions}/{rejected.source.partition}/{rejected.offset}"
    key = mask_card_numbers(rejected.key)[0] if rejected.key is not None else None
    value, masked = mask_card_numbers(rejected.value)
    headers = [(ERROR_HEADER, rejected.reason.encode()), (SOURCE_HEADER, origin.encode())]
    if masked or key != rejected.key:
        headers.append((MASKED_HEADER, b"card numbers masked"))
    return OutRecord(key, value, headers)


@dataclass
class OpenTransaction:
    """A Kafka transaction: open while batches are produced into it, then committing."""

    producer: TransactionalProducer
    started: float  # time.monotonic()
    offsets: dict[int, int] = field(default_factory=dict)  # partition -> next offset to decide
    explaining: list[Future[ScoredBatch]] = field(default_factory=list)  # its flagged rows
    commit: Future[None] | None = None  # once handed to the committer thread

    def commit_done(self) -> bool:
        return self.commit is not None and self.commit.done()


def _close_quietly(consumer: Consumer) -> None:
    try:
        consumer.close()
    except (KafkaException, RuntimeError) as exc:
        log.debug("closing a failed consumer: %s", exc)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
