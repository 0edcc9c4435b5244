"""``fraudstream trainer``: learn from matured labels, promote better models (docs/training.md).

One loop on the main thread, one training round at a time on a background thread:

1. Read ``transactions``, ``feature-log`` and ``labels`` (every partition, read_committed: the
   feature log is written in the workers' Kafka transactions, and an aborted batch must not be
   learnt from) into the window store (:mod:`training.trainer_state`), which joins each label with
   the feature vector the transaction was actually scored with.
2. Keep the clock: event time, the lowest of the transactions partitions' highest timestamps (one
   partition running ahead — or one absurd future timestamp — does not mature everything).
3. Once caught up with the topics, start a round (:mod:`training.trainer_rounds`) when
   ``retrain_every_labels`` transactions have matured since the champion's training window ended
   (or the last round), or ``retrain_interval_hours`` of event time passed. The round works on a
   copy of the rows, so consuming goes on while it trains.
4. A promoted model is announced on ``model-updates``; workers swap to it between two batches.

State is rebuilt at start by reading the topics from the start of the window (wall-clock time
``window_days + label_maturity_days`` ago, ``offsets_for_times``; then filtered by event time).
Nothing is committed to Kafka: the window is a pure function of the topics, and a committed offset
would only say where a state that died with the process had got to. So the topics' retention
must cover the window; the restart costs one read of it.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import (
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from scoring.announcements import ModelAnnouncement
from scoring.decision import policy_from
from scoring.observability import StatusServer
from scoring.registry import RegistryError, UnknownModelError, open_registry
from scoring.settings import Settings
from scoring.wire import decode_labels, decode_transactions
from training.trainer_kafka import (
    FEATURE_LOG,
    LABELS,
    TRANSACTIONS,
    AnnounceError,
    announce,
    decode_feature_log,
)
from training.trainer_metrics import WINDOW_KINDS, TrainerMetrics
from training.trainer_rounds import (
    DAY_MS,
    ERROR,
    RoundInputs,
    RoundResult,
    plan_round,
    retrain_due,
    run_round,
)
from training.trainer_state import WindowStore

log = logging.getLogger("fraudstream.trainer")

HOUSEKEEPING_S = 1.0  # trigger checks, gauges
EVICT_S = 10.0
CHAMPION_CHECK_S = 5.0
ANNOUNCE_RETRY_S = 5.0
ORPHAN_GRACE_MS = 3_600_000  # a feature row waits this long (Kafka time) for its transaction
START_SLACK_MS = DAY_MS  # read a day more than the window: producers' clocks and event time differ
PUBLISHING = ("register", "publish")  # a round in these stages is finished before exiting


@dataclass
class TrainerStats:
    rounds: int = 0
    promotions: int = 0
    refusals: int = 0
    records: int = 0


class Trainer:
    def __init__(
        self, settings: Settings, *, registry: Path | None = None, alias: str = "champion"
    ) -> None:
        self.settings = settings
        self.training = settings.training
        if self.training.eval_days >= self.training.window_days:
            raise ValueError("training.eval_days must be shorter than training.window_days")
        self.alias = alias
        self.registry = open_registry(settings, registry)
        self.policy = policy_from(settings)
        self.metrics = TrainerMetrics()
        self.store = WindowStore()
        self.stats = TrainerStats()
        self.maturity_ms = round(self.training.label_maturity_days * DAY_MS)
        self.keep_ms = self.maturity_ms + round(self.training.window_days * DAY_MS)
        self.topics = {
            name: settings.kafka.topic(name) for name in (TRANSACTIONS, FEATURE_LOG, LABELS)
        }
        self.frontier: dict[int, int] = {}  # transactions partition -> highest event ms
        self.tx_kafka_ms: dict[int, int] = {}  # transactions partition -> latest Kafka time
        self.clock_ms: int | None = None
        self.caught_up = False
        self.rejected = {"transactions": 0, "labels": 0, "feature-log": 0}
        self.last_round_horizon: int | None = None
        self._eof: dict[tuple[str, int], bool] = {}
        self._running = True
        self._heartbeat = time.monotonic()
        self._round: threading.Thread | None = None
        self._round_result: RoundResult | None = None
        self._round_error: BaseException | None = None
        self._stage = ""
        self._pending: ModelAnnouncement | None = None
        self._pending_since = 0.0
        self._champion_until: tuple[float, str | None, int | None] = (-1e9, None, None)
        self._no_champion_logged = -1e9
        self._consumer: Any = None
        self._status: StatusServer | None = None

    # ------------------------------------------------------------------------------ lifecycle

    def stop(self, *_: object) -> None:
        self._running = False

    def run(self, *, max_seconds: float | None = None, port: int | None = None) -> TrainerStats:
        """Serve until SIGTERM/SIGINT (or ``max_seconds``)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        self._status = StatusServer(
            self.metrics.registry,
            self.training.http_host,
            self.training.http_port if port is None else port,
            healthy=self._healthy,
            ready=self._ready,
        ).start()
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        try:
            self._connect()
            last_housekeeping = last_evict = 0.0
            while self._running and (deadline is None or time.monotonic() < deadline):
                self._heartbeat = time.monotonic()
                messages = self._consumer.consume(5000, 0.2)
                if messages:
                    self._route(messages)
                now = time.monotonic()
                if now - last_evict >= EVICT_S and self.caught_up:
                    self._evict()
                    last_evict = now
                if now - last_housekeeping >= HOUSEKEEPING_S:
                    last_housekeeping = now
                    self._housekeeping()
        finally:
            self._shutdown()
        return self.stats

    def _connect(self) -> None:
        kafka = self.settings.kafka
        self._consumer = Consumer(
            {
                **kafka.client_config(),
                # assign() only: no group is joined and nothing is committed (module docstring)
                "group.id": "fraudstream-trainer",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,  # "caught up" = every partition reached its end
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": kafka.fetch_wait_max_ms,
                "queued.min.messages": 100_000,
            }
        )
        metadata = self._consumer.list_topics(timeout=30)
        start_ms = int(time.time() * 1000) - self.keep_ms - START_SLACK_MS
        wanted: list[TopicPartition] = []
        for topic in self.topics.values():
            described = metadata.topics.get(topic)
            if described is None or described.error is not None or not described.partitions:
                raise RuntimeError(
                    f"topic {topic} does not exist; run `fraudstream kafka topics` first"
                )
            wanted += [TopicPartition(topic, p, start_ms) for p in sorted(described.partitions)]
        found = self._consumer.offsets_for_times(wanted, timeout=30)
        assignment = [
            TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
            for tp in found
        ]
        self._eof = {(tp.topic, tp.partition): False for tp in assignment}
        self._consumer.assign(assignment)
        log.info(
            "trainer reading %s from %s (window %g + maturity %g days); registry %s",
            ", ".join(self.topics.values()),
            time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(start_ms / 1000)),
            self.training.window_days,
            self.training.label_maturity_days,
            self.registry.storage.describe(),
        )

    def _shutdown(self) -> None:
        round_thread = self._round
        if round_thread is not None and round_thread.is_alive():
            if self._stage in PUBLISHING:
                log.info("waiting for the round to finish publishing")
                round_thread.join(90.0)
            else:
                log.info("abandoning the running round (%s)", self._stage or "starting")
        if self._round_result is not None or self._round_error is not None:
            self._finish_round()
        if self._pending is not None:
            self._announce_pending()
        if self._consumer is not None:
            try:
                self._consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("closing the consumer: %s", exc)
        if self._status is not None:
            self._status.stop()

    def _healthy(self) -> tuple[bool, str]:
        silent = time.monotonic() - self._heartbeat
        return silent < 120.0, f"loop last turned {silent:.1f} s ago"

    def _ready(self) -> tuple[bool, str]:
        if not self.caught_up:
            return False, "reading the window"
        return True, f"caught up; event time {self._clock_text()}"

    def _clock_text(self) -> str:
        if self.clock_ms is None:
            return "unknown"
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock_ms / 1000))

    # ---------------------------------------------------------------------------------- input

    def _route(self, messages: Sequence[Message]) -> None:
        groups: dict[tuple[str, int], list[Message]] = {}
        for message in messages:
            error = message.error()
            key = (message.topic() or "", message.partition() or 0)
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._eof[key] = True
                    continue
                if error.fatal():
                    raise KafkaException(error)
                log.warning("consumer: %s", error)
                continue
            groups.setdefault(key, []).append(message)
        for (topic, partition), batch in groups.items():
            self.stats.records += len(batch)
            if topic == self.topics[TRANSACTIONS]:
                self._add_transactions(partition, batch)
            elif topic == self.topics[FEATURE_LOG]:
                records = decode_feature_log(batch)
                self.rejected["feature-log"] += records.rejected
                self.store.add_features(
                    records.transaction_ids,
                    records.bank_ids,
                    records.features,
                    records.scores,
                    records.model_versions,
                    records.kafka_ms,
                )
            elif topic == self.topics[LABELS]:
                table, _positions, rejected = decode_labels([m.value() or b"" for m in batch])
                self.rejected["labels"] += len(rejected)
                self.store.add_labels(table)
        if not self.caught_up and self._eof and all(self._eof.values()):
            self.caught_up = True
            counts = self.store.counts(self.clock_ms or 0, self.maturity_ms)
            log.info(
                "caught up: %s joined transactions (%s matured, %s frauds), event time %s",
                f"{counts.joined:,}",
                f"{counts.matured:,}",
                f"{counts.frauds:,}",
                self._clock_text(),
            )

    def _add_transactions(self, partition: int, batch: list[Message]) -> None:
        table, positions, rejected = decode_transactions([m.value() or b"" for m in batch])
        self.rejected["transactions"] += len(rejected)  # the worker dead-letters them
        if table.num_rows == 0:
            return
        kafka_ms = np.fromiter((batch[i].timestamp()[1] for i in positions), np.int64)
        self.store.add_transactions(table, kafka_ms)
        ts = table.column("timestamp").cast("int64").to_numpy()
        self.frontier[partition] = max(self.frontier.get(partition, ts.max()), int(ts.max()))
        self.tx_kafka_ms[partition] = max(self.tx_kafka_ms.get(partition, 0), int(kafka_ms.max()))
        clock = min(self.frontier.values())
        if self.clock_ms is None or clock > self.clock_ms:  # never backwards
            self.clock_ms = clock

    def _evict(self) -> None:
        if self.clock_ms is None:
            return
        orphans_before = (
            min(self.tx_kafka_ms.values()) - ORPHAN_GRACE_MS if self.tx_kafka_ms else None
        )
        dropped = self.store.evict(
            self.clock_ms - self.keep_ms, orphans_seen_before_ms=orphans_before
        )
        if dropped:
            log.debug("evicted %d rows", dropped)

    # ------------------------------------------------------------------------------ rounds

    def _housekeeping(self) -> None:
        if self.clock_ms is not None:
            self.metrics.event_time.set(self.clock_ms / 1000.0)
            counts = self.store.counts(self.clock_ms, self.maturity_ms)
            for kind in WINDOW_KINDS:
                value = counts.frauds if kind == "fraud" else getattr(counts, kind)
                self.metrics.window.labels(kind=kind).set(value)
        if self._round is not None and not self._round.is_alive():
            self._round.join()
            self._round = None
            self._finish_round()
        if self._pending is not None and time.monotonic() - self._pending_since >= ANNOUNCE_RETRY_S:
            self._announce_pending()
        if self._round is None and self.caught_up and self._running:
            self._maybe_start_round()

    def _champion(self) -> tuple[str | None, int | None]:
        """The champion's version and the end of its training window (cached a few seconds)."""
        checked, version, until = self._champion_until
        if time.monotonic() - checked < CHAMPION_CHECK_S:
            return version, until
        try:
            manifest = self.registry.get(self.alias)
            version = manifest.version
            end = manifest.window.until
            until = None if end is None else round(end.timestamp() * 1000)
        except (UnknownModelError, RegistryError, OSError, ValueError):
            version, until = None, None
        self._champion_until = (time.monotonic(), version, until)
        return version, until

    def _maybe_start_round(self) -> None:
        clock = self.clock_ms
        if clock is None:
            return
        champion, until = self._champion()
        if champion is None:
            if time.monotonic() - self._no_champion_logged > 60:
                log.warning(
                    "no %s in %s: nothing to improve on yet (train one: fraudstream train)",
                    self.alias,
                    self.registry.storage.describe(),
                )
                self._no_champion_logged = time.monotonic()
            return
        horizon = clock - self.maturity_ms
        marks = [m for m in (until, self.last_round_horizon) if m is not None]
        base = max(marks) if marks else None
        new = self.store.count_usable(clock, self.maturity_ms, base)
        oldest = self.store.oldest_ms()
        moved = horizon - (base if base is not None else (oldest or horizon))
        if not retrain_due(new, moved, self.training):
            return
        plan = plan_round(clock, self.training, until)
        self.last_round_horizon = horizon
        if plan is None:
            log.info("no matured period after %s's training window yet; waiting", champion)
            return
        rows = self.store.usable(clock, self.maturity_ms, plan.window_start_ms)
        data = self.store.rows(rows, as_of_ms=clock)
        log.info(
            "round %d against %s: %s new matured transactions; %s usable (%s frauds); %s",
            self.stats.rounds + 1,
            champion,
            f"{new:,}",
            f"{len(data):,}",
            f"{data.frauds:,}",
            plan.describe(),
        )
        self._stage = "starting"
        self._round_result, self._round_error = None, None
        self._round = threading.Thread(
            target=self._round_job, args=(RoundInputs(data, plan),), name="training-round",
            daemon=True,  # a fit in progress is abandoned at exit (nothing is published yet)
        )  # fmt: skip
        self._round.start()

    def _round_job(self, inputs: RoundInputs) -> None:
        try:
            result = run_round(
                inputs,
                self.registry,
                self.training,
                self.policy,
                alias=self.alias,
                should_stop=lambda: not self._running,
                on_stage=self._on_stage,
            )
            if result.announcement is not None:
                started = time.perf_counter()
                try:
                    announce(self.settings.kafka, result.announcement)
                except AnnounceError as exc:
                    log.error("announcing %s failed (%s); retrying", result.promoted, exc)
                    self._pending = result.announcement
                    self._pending_since = time.monotonic()
                result.seconds["publish"] = (
                    result.seconds.get("publish", 0.0) + time.perf_counter() - started
                )
            self._round_result = result
        except Exception as exc:  # a failed round must not stop the service
            log.exception("training round failed")
            self._round_error = exc

    def _on_stage(self, stage: str) -> None:
        self._stage = stage

    def _finish_round(self) -> None:
        result, error = self._round_result, self._round_error
        self._round_result, self._round_error, self._stage = None, None, ""
        self.stats.rounds += 1
        if result is None:
            self.stats.refusals += 1
            self.metrics.refusals.labels(reason=ERROR).inc()
            log.error("round failed (%s): champion kept", error)
            return
        self.metrics.round_done(result, time.time())
        fit = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
        if result.outcome == "promoted":
            self.stats.promotions += 1
            self._champion_until = (-1e9, None, None)
            compiled = f"{result.compile_seconds:.1f} s" if result.compile_seconds else "n/a"
            log.info(
                "promoted %s (%s) over %s: %s; %s; stages: %s; compile %s",
                result.promoted,
                result.challenger,
                result.champion,
                result.detail,
                result.plan.describe(),
                fit,
                compiled,
            )
        elif result.outcome == "refused":
            self.stats.refusals += 1
            log.warning(
                "kept champion %s (%s): %s; stages: %s",
                result.champion,
                result.reason,
                result.detail,
                fit,
            )
        for name, card in result.scorecards.items():
            log.info("  %-9s %s", name, card.summary())

    def _announce_pending(self) -> None:
        pending = self._pending
        if pending is None:
            return
        try:
            announce(self.settings.kafka, pending)
        except AnnounceError as exc:
            log.error("announcing %s failed again (%s)", pending.version, exc)
            self._pending_since = time.monotonic()
            return
        self._pending = None
