"""``fraudstream up`` and ``demo``: the whole stack on one machine, started and stopped by one
command.

1. **Prepare** (in this process): the local Kafka (or the configured cluster), fresh topics, a
   simulated month plus a few "live" days, a first model trained and compiled on the first weeks
   with the labels the bank knew then, the last week of the month scored offline and evaluated.
2. **Start the services** as subprocesses (supervisor.py), each on a free (or given) port with its
   log in the run directory: the API (waiting for its /readyz), the worker(s) as the history
   begins, the trainer once it is decided.
3. **History**: the month and its labels into Kafka at a paced rate; wait until it is all decided.
4. **Live**: the following days, one bank through the API over HTTP, the others through Kafka,
   labels as they are reported; ``demo`` sends a fixed number of transactions, ``up`` loops the
   days until Ctrl-C. The trainer learns from the matured labels and runs its rounds meanwhile.
5. **Stop** every process it started (services, then the broker if it started it), then ``demo``
   checks what came out and prints its summary.

Everything a run writes is under one run directory (``runs/<mode>-<time>/`` by default): ``data/``
(the simulated logs), ``registry/``, ``scores.parquet`` (offline, last week of the month),
``state/`` (worker checkpoints), ``logs/<service>.log``, ``processes.json`` (every pid started) and
``summary.json``. Every process of the run, the broker it starts included, inherits
``FRAUDSTREAM_RUN=<run directory>`` in its environment, so that a leftover would be findable.
The broker's own files stay in its directory (``kafka.local_dir``): it is shared between runs.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from fraudstream.commands.common import console, steps
from fraudstream.commands.decision_log import DecisionLog
from fraudstream.commands.demo_cards import tokenize_bank_cards
from fraudstream.commands.live_view import LiveView, Sources
from fraudstream.commands.supervisor import (
    RUN_MARKER,
    Service,
    ServiceError,
    Shutdown,
    Supervisor,
    raise_on_termination,
    service_argv,
)
from fraudstream.commands.workload import (
    DAY_MS,
    ApiClient,
    Walker,
    live_segments,
    sort_by_time,
    split_labels,
    with_send_time,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from scoring.settings import KafkaSettings, Settings
    from stream.local_kafka import LocalKafka

# Labels in the simulated world arrive within LABEL_DELAY_DAYS (instead of weeks) so that a short
# run sees them mature and the trainer run a round; the trainer's settings below follow from it.
LABEL_DELAY_DAYS = 3
TRAINER_DEFAULTS = {
    "FRAUD_TRAINING__LABEL_MATURITY_DAYS": str(LABEL_DELAY_DAYS),
    "FRAUD_TRAINING__EVAL_DAYS": "3",
    "FRAUD_TRAINING__WINDOW_DAYS": "14",
    # By event time only: a round once the horizon moved 3 days past the first model's window,
    # i.e. near the end of the month (its last 7 days were not trained on), then every 3 days.
    "FRAUD_TRAINING__RETRAIN_EVERY_LABELS": "100000000",
    "FRAUD_TRAINING__RETRAIN_INTERVAL_HOURS": "72",
    "FRAUD_TRAINING__MIN_EVAL_FRAUDS": "20",
    "FRAUD_TRAINING__MAX_TREES": "300",
    "FRAUD_TRAINING__CONTINUE_TREES": "100",
}
# The history replay must equal the offline replay exactly: no partition may be declared idle
# while the replay is still producing (docs/stream.md, "Watermark and idle partitions").
WORKER_ENV = {"FRAUD_STREAM__SOURCE_IDLE_MS": "2000", "FRAUD_STREAM__LABEL_IDLE_MS": "2000"}
READY_TIMEOUT_S = 240.0


class RunError(RuntimeError):
    """The run cannot go on (a wait timed out, a thread failed); the message says what."""


@dataclass(frozen=True)
class StackOptions:
    run_dir: Path | None
    days: int
    live_days: int
    cards: int
    seed: int
    workers: int
    rate: float
    live_rate: float
    live_transactions: int | None  # None: loop until Ctrl-C (up)
    api_bank: str
    api_concurrency: int
    api_deadline_ms: float
    api_port: int | None
    keep_kafka: bool
    trainer_wait_s: float
    status_every: float


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class World:
    """The simulated data of a run."""

    transactions: pa.Table  # month + live days, time-ordered
    labels: pa.Table
    month: pa.Table
    live: pa.Table
    start: datetime
    month_end_ms: int
    test_from: datetime


class _Job:
    """A function on a background thread; its result or error collected."""

    def __init__(self, name: str, target: Callable[[], int]) -> None:
        self.result: int | None = None
        self.error: BaseException | None = None
        self._target = target
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self._target()
        except BaseException as exc:
            self.error = exc

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()


class StackRun:
    """One run of ``up`` or ``demo``: what it started and what it measured."""

    broker: LocalKafka
    _base_env: dict[str, str]
    trainer: Service | None
    api: Service
    api_key: str
    decisions: DecisionLog
    api_client: ApiClient
    walker: Walker
    view: LiveView
    _display: _Display

    def __init__(
        self, opts: StackOptions, mode: str, settings: Settings, run_dir: Path, kafka: KafkaSettings
    ) -> None:
        self.opts = opts
        self.mode = mode  # "demo" | "up"
        self.settings = settings
        self.run_dir = run_dir
        self.kafka = kafka
        self.supervisor = Supervisor(run_dir)
        self.workers: list[Service] = []
        self.trainer = None
        self.summary: dict[str, str] = {}
        self.failures: list[str] = []
        self.scan_failures: list[str] = []  # joined after the checks, which they must not skip
        self.phase = "starting"
        self.started_broker = False
        self.history_sent = 0
        self.live_from_count = 0
        self.live_sent_tables: list[pa.Table] = []
        # Card-number tokenization on (docs/up.md, "Card numbers"): a key made for this run, held
        # only here and in the API's environment, never written; and the API bank's card numbers
        # by token (demo_cards.py), in memory only.
        self.tokenization_key = secrets.token_urlsafe(48)
        self.card_numbers: dict[str, str] = {}
        self._stop = threading.Event()

    # ------------------------------------------------------------------------------ prepare

    def prepare(self) -> World:
        import pyarrow as pa
        import pyarrow.compute as pc

        from scoring.decision import policy_from
        from scoring.logs import TIMESTAMP, write_log
        from scoring.registry import ModelRegistry
        from scoring.tokenize import CardTokenizer
        from stream.local_kafka import LocalKafka
        from stream.topics import create_topics
        from training.evaluate import evaluate
        from training.offline import score_log
        from training.simulator import SimulationConfig, simulate
        from training.train import train_and_register

        opts = self.opts
        with steps() as progress:
            task = progress.add_task("starting Kafka")

            def step(text: str) -> None:
                progress.update(task, description=text)

            broker = LocalKafka(self.settings.kafka)
            self.broker = broker
            was_running = broker.external or broker.find_pid() is not None
            status = broker.up(progress=step)
            self.started_broker = not was_running
            self.supervisor.extra["broker"] = {
                "pid": status.pid,
                "started_by_run": self.started_broker,
                "bootstrap": status.bootstrap,
            }
            self.supervisor.write_record()
            self.kafka = self.kafka.model_copy(update={"bootstrap_servers": status.bootstrap})
            step("creating topics")
            create_topics(self.kafka)
            where = "external" if status.external else "local"
            started = ", started by this run" if self.started_broker else ""
            self.summary["kafka"] = (
                f"{status.bootstrap} ({where}{started}), topics {self.kafka.topic_prefix}*"
            )

            step(f"simulating {opts.days} + {opts.live_days} days of {opts.cards:,} cards")
            config = SimulationConfig(
                days=opts.days + opts.live_days, cards=opts.cards, seed=opts.seed,
                max_label_delay_days=LABEL_DELAY_DAYS, label_maturity_days=LABEL_DELAY_DAYS,
            )  # fmt: skip
            transactions, labels = simulate(config)
            transactions = sort_by_time(transactions)
            step(f"tokenizing {opts.api_bank}'s card numbers with the run's key")
            transactions, self.card_numbers = tokenize_bank_cards(
                transactions, opts.api_bank, CardTokenizer.parse(self.tokenization_key)
            )
            data = self.run_dir / "data"
            write_log(transactions, data / "transactions.parquet")
            write_log(labels, data / "labels.parquet")
            start = config.start
            month_end = start + timedelta(days=opts.days)
            month_end_ms = round(month_end.timestamp() * 1000)
            in_month = pc.less(transactions["timestamp"], pa.scalar(month_end, TIMESTAMP))
            world = World(
                transactions=transactions,
                labels=labels,
                month=transactions.filter(in_month),
                live=transactions.filter(pc.invert(in_month)),
                start=start,
                month_end_ms=month_end_ms,
                test_from=month_end - timedelta(days=7),
            )
            fraud = pc.sum(pc.cast(labels["is_fraud"], pa.int64())).as_py()
            self.summary["simulated"] = (
                f"{world.month.num_rows:,} transactions in {opts.days} days + "
                f"{world.live.num_rows:,} in {opts.live_days} live days, {opts.cards:,} cards, "
                f"{fraud:,} fraud labels (reported within {LABEL_DELAY_DAYS} days)"
            )
            self.summary["card numbers"] = (
                f"{len(self.card_numbers):,} cards of {opts.api_bank} have a synthetic card number "
                "(in memory only); their history goes to Kafka tokenized with the run's key, "
                "their live transactions to the API as raw card numbers, which it tokenizes"
            )

            # The first model: the weeks before the last one, with the labels known by then.
            warmup = timedelta(days=min(7, (opts.days - 7) // 2))
            known = labels.filter(
                pc.less(labels["reported_at"], pa.scalar(world.test_from, TIMESTAMP))
            )
            registry = ModelRegistry(self.run_dir / "registry")
            manifest = train_and_register(
                world.month, known, registry=registry, seed=opts.seed,
                start=start + warmup, until=world.test_from, on_step=step,
            )  # fmt: skip
            registry.promote(manifest.version)
            model = registry.load("champion")
            self.summary["first model"] = (
                f"{manifest.version} ({model.scorer.engine}), trained on "
                f"{(start + warmup):%Y-%m-%d} – {world.test_from:%Y-%m-%d}"
            )

            step("scoring the month's last week offline")
            scores = score_log(
                world.month, labels, model, start=world.test_from,
                policy=policy_from(self.settings),
                cpu_second_usd=self.settings.scoring.cpu_second_usd,
            )  # fmt: skip
            write_log(scores, self.run_dir / "scores.parquet")
            result = evaluate(scores, labels)
            self.summary["last week, offline"] = (
                f"{result.transactions:,} transactions, {result.frauds} fraud: AUC ROC / AP "
                f"{result.auc_roc:.3f} / {result.average_precision:.3f}, card precision@100 "
                f"{result.card_precision_at_k:.3f}, cost per transaction "
                f"{result.cost_per_transaction:.3f} (approve-all "
                f"{result.approve_all_cost_per_transaction:.3f})"
            )

            step("starting the API")
            self.start_services()
            step("waiting for its /readyz")
            self.api.wait_ready(time.monotonic() + READY_TIMEOUT_S)
        return world

    # ----------------------------------------------------------------------------- services

    def start_services(self) -> None:
        from api.security import hash_key

        opts = self.opts
        logs = self.run_dir / "logs"
        base = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "FRAUD_KAFKA__BOOTSTRAP_SERVERS": self.kafka.effective_bootstrap(),
            "FRAUD_KAFKA__TOPIC_PREFIX": self.kafka.topic_prefix,
            "FRAUD_SCORING__REGISTRY": str(self.run_dir / "registry"),
        }
        self._base_env = base
        port = opts.api_port or free_port()
        # A key for this run only; the API keeps only its SHA-256 (docs/api.md).
        self.api_key = secrets.token_urlsafe(24)
        env = {
            **base,
            "FRAUD_API__API_KEYS": json.dumps({opts.api_bank: [hash_key(self.api_key)]}),
            "FRAUD_API__DEADLINE_MS": f"{opts.api_deadline_ms:g}",
            "FRAUD_API__TOKENIZATION_KEY": self.tokenization_key,
        }
        self.api = self.supervisor.start(
            Service("api", service_argv("api", "--port", str(port)), env, port, logs / "api.log")
        )

    def start_trainer(self) -> Service:
        port = free_port()
        env = {**self._base_env, **{k: os.environ.get(k, v) for k, v in TRAINER_DEFAULTS.items()}}
        # A round that is publishing finishes on SIGTERM (up to 90 s, docs/training.md).
        service = Service(
            "trainer", service_argv("trainer", "--port", str(port)), env, port,
            self.run_dir / "logs" / "trainer.log", grace_s=100.0,
        )  # fmt: skip
        self.trainer = self.supervisor.start(service)
        self.view.sources.trainer = service
        return service

    def start_workers(self) -> None:
        """Started as the history begins, so that they start into traffic: a worker that waits
        idle for longer than its idle grace would release the first seconds of a replay before
        every partition has delivered (docs/stream.md, "Known limit: idleness after a pause")."""
        logs = self.run_dir / "logs"
        for i in range(1, self.opts.workers + 1):
            port = free_port()
            env = {
                **self._base_env,
                **WORKER_ENV,
                "FRAUD_STREAM__STATE_DIR": str(self.run_dir / "state"),
                "FRAUD_STREAM__GROUP_ID": f"fraudstream-{self.run_dir.name}",
            }
            argv = service_argv("worker", "--instance", f"w{i}", "--port", str(port))
            service = Service(f"worker-{i}", argv, env, port, logs / f"worker-{i}.log")
            self.workers.append(self.supervisor.start(service))

    # -------------------------------------------------------------------------------- drive

    def drive(self, world: World) -> None:
        from stream.topics import TopicNames

        opts = self.opts
        names = TopicNames.from_settings(self.kafka)
        self.decisions = DecisionLog(self.kafka, names.decisions, keep=self.mode == "demo")
        self.decisions.start()
        self.api_client = ApiClient(
            self.api.url, self.api_key, concurrency=opts.api_concurrency,
            keep_answers=self.mode == "demo",
        )  # fmt: skip
        self.walker = Walker(
            self.kafka, api=self.api_client, api_bank=opts.api_bank,
            card_numbers=self.card_numbers, stop=self._stop,
        )  # fmt: skip
        self.view = LiveView(
            Sources(
                workers=self.workers, api=self.api, trainer=None,
                decisions=self.decisions, walk=lambda: self.walker.stats,
                api_stats=lambda: self.api_client.stats, phase=lambda: self.phase,
            )
        )  # fmt: skip
        with _Display(self.view, opts.status_every) as display:
            self._display = display
            labels = with_send_time(world.labels)
            history_labels, later = split_labels(labels, world.month_end_ms)

            self.phase = "history: the month into Kafka"
            job = _Job(
                "history", lambda: self.walker.walk(world.month, history_labels, rate=opts.rate)
            )
            self.start_workers()
            self.wait(lambda: job.done, None, "the history to be sent", job)
            self.history_sent = job.result or 0
            self.phase = "history: the stream decides the rest"
            self.wait(
                lambda: self.decisions.count >= self.history_sent, 600, "the history's decisions"
            )
            first, last = self.decisions.first_at, self.decisions.last_at
            rate = self.history_sent / max(last - first, 1e-9)
            self.summary["history"] = (
                f"{self.history_sent:,} transactions and {self.walker.stats.labels:,} labels into "
                f"Kafka (paced at {opts.rate:,.0f}/s), decided at {rate:,.0f}/s "
                "(first to last decision; the worker starts into the backlog)"
            )
            # The trainer starts now, not before: its clock follows the transactions topic, and
            # while a worker still decides the backlog the feature log lags behind it, so an
            # earlier trainer would run its first round on a holdout with few joined rows.
            self.phase = "starting the trainer"
            trainer = self.start_trainer()
            self.wait(lambda: _ready(trainer), READY_TIMEOUT_S, "the trainer's /readyz")

            live_tx_ids = set(world.live["transaction_id"].to_pylist())
            live_labels = labels.filter(_isin(labels["transaction_id"], live_tx_ids))
            later = later.filter(_invert(_isin(later["transaction_id"], live_tx_ids)))
            segments = live_segments(
                world.live, live_labels, later,
                loop_ms=opts.live_days * DAY_MS, start_ms=world.month_end_ms,
            )  # fmt: skip
            kafka_before, labels_before = (
                self.walker.stats.kafka_transactions,
                self.walker.stats.labels,
            )

            def live() -> int:
                sent = 0
                for tx, due in segments:
                    limit = (
                        None if opts.live_transactions is None else opts.live_transactions - sent
                    )
                    if limit is not None and limit <= 0:
                        break
                    n = self.walker.walk(tx, due, rate=opts.live_rate, limit=limit, use_api=True)
                    if self.mode == "demo":  # for its checks; up keeps nothing per transaction
                        self.live_sent_tables.append(tx.slice(0, n))
                    sent += n
                    if self._stop.is_set():
                        break
                return sent

            self.phase = f"live: {opts.api_bank} through the API, the other banks through Kafka" + (
                " (Ctrl-C stops)" if opts.live_transactions is None else ""
            )
            began = time.monotonic()
            self.live_from_count = self.decisions.count
            job = _Job("live", live)
            self.wait(lambda: job.done, None, "the live traffic to be sent", job)
            live_sent = job.result or 0
            self.api_client.drain(60)
            sent_seconds = time.monotonic() - began
            self.phase = "live: the stream decides the rest"
            total = self.history_sent + live_sent
            self.wait(lambda: self.decisions.count >= total, 300, "the live decisions")
            api = self.api_client.stats
            self.summary["live"] = (
                f"{live_sent:,} transactions in {sent_seconds:.0f} s "
                f"({live_sent / max(sent_seconds, 1e-9):,.0f}/s): "
                f"{self.walker.stats.kafka_transactions - kafka_before:,} through Kafka, "
                f"{api.sent:,} through the API ({opts.api_bank}, up to {opts.api_concurrency} at "
                f"a time, {api.card_numbers:,} with a raw card number); "
                f"{self.walker.stats.labels - labels_before:,} labels "
                f"({api.labels:,} through the API)"
            )
            if self.view.trainer_rounds == 0 and opts.trainer_wait_s > 0:
                # Its first round is due as soon as it has read the month (TRAINER_DEFAULTS).
                self.phase = "waiting for the trainer's first round"
                self.wait(
                    lambda: self.view.trainer_rounds >= 1,
                    opts.trainer_wait_s,
                    "the trainer's first round",
                    required=self.mode == "demo",
                )
            self.phase = "done: watching for duplicates"
            self.pause(2.0)

    def wait(
        self,
        condition: Callable[[], bool],
        timeout: float | None,
        what: str,
        job: _Job | None = None,
        *,
        required: bool = True,
    ) -> None:
        """Tick the view (once a second) until ``condition``; fail if a service or a background
        job dies, or after ``timeout`` seconds (just return then if not ``required``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._display.tick()
            if job is not None and job.error is not None:
                raise RunError(f"while waiting for {what}: {job.error!r}") from job.error
            if condition():
                return
            self.supervisor.check_alive()
            if self.decisions.error is not None:
                raise RunError(f"reading decisions: {self.decisions.error!r}")
            if deadline is not None and time.monotonic() > deadline:
                if not required:
                    return
                raise RunError(f"gave up waiting for {what} after {timeout:.0f} s")
            time.sleep(1.0)

    def pause(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        self.wait(lambda: time.monotonic() >= end, None, "a pause")

    # ------------------------------------------------------------------------------- stop

    def stop_workload(self) -> None:
        self._stop.set()
        walker = getattr(self, "walker", None)
        client = getattr(self, "api_client", None)
        if client is not None:
            client.drain(15)
        if walker is not None:
            walker.close()
        if client is not None:
            client.close()
        decisions = getattr(self, "decisions", None)
        if decisions is not None:
            decisions.stop()

    def stop_services(self) -> None:
        exits: list[str] = []

        def stopped(service: Service, code: int | None) -> None:
            exits.append(f"{service.name} {code}")
            console.print(f"stopped {service.name} (exit {code})")

        self.supervisor.stop_all(stopped)
        if exits:
            self.summary["services stopped (exit codes)"] = ", ".join(reversed(exits))
            bad = [e for e in exits if not e.endswith(" 0")]
            if bad:
                self.failures.append(f"services did not exit cleanly: {', '.join(bad)}")

    def scan_card_data(self) -> None:
        """demo: look for card numbers in every file and topic record of the run (run_scan.py),
        after the services stopped (logs flushed, final checkpoints written) and before the broker
        does. Any hit fails the run; hits are printed masked."""
        from confluent_kafka import KafkaException

        from fraudstream.commands.run_scan import scan_run

        started = self.started_broker and not self.broker.external
        try:
            with steps() as progress:
                progress.add_task("scanning the run's files and topic records for card numbers")
                scan = scan_run(
                    self.run_dir, self.kafka, broker_home=self.broker.home if started else None
                )
        except (KafkaException, TimeoutError, OSError) as exc:
            self.summary["card-number scan"] = f"could not finish: {exc}"
            self.scan_failures.append(f"card-number scan could not finish: {exc}")
            return
        self.summary["card-number scan"] = scan.line() + (
            "; run directory, the broker's files of the run and every record of its topics"
            if started
            else "; run directory and every record of its topics"
        )
        for item in scan.found[:20]:
            console.print(f"card number: {item}", markup=False)
        if scan.found:
            self.scan_failures.append(f"{len(scan.found)} card numbers found in the run's data")

    def stop_broker(self) -> None:
        broker = getattr(self, "broker", None)
        if broker is not None and self.started_broker:
            if self.opts.keep_kafka:
                self.summary["kafka"] += "; left running (--keep-kafka)"
            else:
                status = broker.down()
                console.print(f"broker: {status.note}")
                self.summary["kafka"] += f"; {status.note}"

    # ------------------------------------------------------------------------------ checks

    def final_figures(self) -> None:
        """The last live figures, and what only the end can say (whole-run percentiles)."""
        figures = self.view.figures
        for name in ("decision mix", "cost per transaction", "model", "consumer lag", "trainer"):
            if name in figures:
                self.summary[name] = figures[name]
        live = max(0, self.decisions.count - self.live_from_count)
        latencies = [s.latency_ms for s in list(self.decisions.recent)[-live:]] if live else []
        if latencies:
            p = np.percentile(latencies, [50, 99])
            self.summary["stream latency p50 / p99"] = (
                f"{p[0]:,.0f} / {p[1]:,.0f} ms (decisions' latency_ms, last {len(latencies):,} "
                "live decisions)"
            )
        api = self.api_client.stats
        if "live" not in self.summary:  # up, stopped by Ctrl-C
            walk = self.walker.stats
            self.summary["sent"] = (
                f"{walk.kafka_transactions:,} transactions to Kafka, {api.sent:,} to the API, "
                f"{walk.labels:,} labels; {self.decisions.count:,} decisions read back"
            )
        if api.latencies_ms:
            p = np.percentile(list(api.latencies_ms), [50, 90, 99])
            self.summary["API latency p50 / p90 / p99"] = (
                f"{p[0]:,.0f} / {p[1]:,.0f} / {p[2]:,.0f} ms (client, {api.answered:,} answers)"
            )
        self.summary["degraded"] = (
            f"{api.degraded:,} of {api.answered:,} API answers (deadline "
            f"{self.opts.api_deadline_ms:g} ms); {api.errors} errors"
        )
        if api.first_errors:
            self.summary["first API errors"] = "; ".join(api.first_errors)
        self.summary["trainer"] = figures.get("trainer", "–")

    def check(self, world: World) -> None:
        """demo: each transaction decided exactly once; history scores == offline; non-degraded
        API answers == the stream's records. Failures are collected in ``self.failures``."""
        import pyarrow as pa

        decided = self.decisions.by_key
        twice = self.decisions.twice
        history = list(
            zip(
                world.month["bank_id"].to_pylist(),
                world.month["transaction_id"].to_pylist(),
                strict=True,
            )
        )[: self.history_sent]
        missing = [k for k in history if k not in decided]
        self.summary["stream decisions"] = (
            f"{len(history) - len(missing):,} of {len(history):,} transactions decided, "
            f"{len(twice):,} twice"
        )
        if missing or twice:
            self.failures.append(
                f"history: {len(missing):,} not decided, {len(twice):,} decided twice"
            )
        self.summary["online vs offline (history)"] = self._compare_offline(world, history)

        live = pa.concat_tables(self.live_sent_tables) if self.live_sent_tables else None
        api_bank = self.opts.api_bank
        answers = self.api_client.answers
        if live is not None:
            keys = list(
                zip(live["bank_id"].to_pylist(), live["transaction_id"].to_pylist(), strict=True)
            )
            lost = [k for k in keys if k not in decided]
            by_api = [k for k in keys if k[0] == api_bank]
            unanswered = [k for k in by_api if k[1] not in answers]
            self.summary["live decisions"] = (
                f"{len(keys) - len(lost):,} of {len(keys):,} transactions decided "
                f"({len(by_api):,} sent through the API, {len(unanswered)} unanswered)"
            )
            if lost or unanswered:
                self.failures.append(
                    f"live: {len(lost):,} not decided, {len(unanswered):,} API requests unanswered"
                )
            stream_answers = [(k, answers[k[1]]) for k in by_api if k[1] in answers]
            fast = [(k, a) for k, a in stream_answers if not a.get("degraded")]
            differ = [k for k, a in fast if k in decided and orjson.loads(decided[k]) != a]
            self.summary["API answers vs stream"] = (
                f"{len(fast) - len(differ):,} of {len(fast):,} non-degraded answers equal the "
                f"stream's decision record; {len(stream_answers) - len(fast):,} degraded answers "
                "were decided by the stream later"
            )
            if differ:
                self.failures.append(f"{len(differ)} API answers differ from the stream's records")

    def _compare_offline(self, world: World, keys: list[tuple[str, str]]) -> str:
        """Each history decision against the offline replay scored by the model version that
        made it (the trainer may promote a model while the history is decided)."""
        from scoring.features import FeatureEngine, replay_log
        from scoring.registry import ModelRegistry

        decided = self.decisions.by_key
        rows = [i for i, k in enumerate(keys) if k in decided]
        if not rows:
            self.failures.append("history: no decision to compare with the offline replay")
            return "–"
        records = [orjson.loads(decided[keys[i]]) for i in rows]
        online = np.array([r["score"] for r in records])
        versions = np.array([r["model_version"] for r in records])
        features = replay_log(world.month, world.labels, engine=FeatureEngine())
        registry = ModelRegistry(self.run_dir / "registry")
        worst = 0.0
        counts = []
        index = np.array(rows)
        for version in sorted(set(versions.tolist())):
            mine = versions == version
            offline = registry.load(version).score_many(features[index[mine]])
            worst = max(worst, float(np.max(np.abs(offline - online[mine]))))
            counts.append(f"{version}: {int(mine.sum()):,}")
        if worst != 0.0:
            self.failures.append(f"history: online scores differ from offline by up to {worst:.1e}")
        return f"max |Δ score| = {worst:.1e} over {len(rows):,} ({'; '.join(counts)})"


def _ready(service: Service) -> bool:
    try:
        return service.get("/readyz")[0] == 200
    except OSError:
        return False


def _isin(column: Any, values: set[str]) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.is_in(column, value_set=pa.array(sorted(values), pa.string()))


def _invert(mask: Any) -> Any:
    import pyarrow.compute as pc

    return pc.invert(mask)


class _Display:
    """rich Live on a terminal; a plain status line every ``every`` seconds otherwise."""

    def __init__(self, view: LiveView, every: float) -> None:
        from rich.live import Live

        self.view = view
        self.every = every
        self.last_line = 0.0
        self.last_tick = 0.0
        self.live = Live(console=console, refresh_per_second=2) if console.is_terminal else None

    def __enter__(self) -> _Display:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.live is not None:
            self.live.stop()

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.last_tick < 1.0:
            return
        self.last_tick = now
        self.view.tick()
        if self.live is not None:
            self.live.update(self.view.table())
        elif now - self.last_line >= self.every:
            self.last_line = now
            console.print(self.view.line(), soft_wrap=True, highlight=False, markup=False)


# ------------------------------------------------------------------------------- entry point


def run_stack(opts: StackOptions, mode: str) -> int:
    """Run ``demo`` or ``up``; returns the exit code (0: clean, and for demo every check passed)."""
    from confluent_kafka import KafkaException

    from scoring.registry import RegistryError
    from scoring.settings import get_settings
    from stream.local_kafka import LocalKafkaError

    settings = get_settings()
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S}"
    kafka = settings.kafka
    if not kafka.topic_prefix:  # fresh topics: a run never mixes with earlier ones
        kafka = kafka.model_copy(update={"topic_prefix": f"{mode}-{stamp}."})
    run_dir = (opts.run_dir or Path("runs") / f"{mode}-{stamp}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    os.environ[RUN_MARKER] = str(run_dir)  # inherited by every process this run starts
    raise_on_termination()
    run = StackRun(opts, mode, settings, run_dir, kafka)
    run.supervisor.write_record()
    began = time.monotonic()
    interrupted = False
    world = None
    try:
        world = run.prepare()
        run.drive(world)
    except (KeyboardInterrupt, Shutdown):
        interrupted = True
        console.print("stopping: Ctrl-C / SIGTERM")
    except (ServiceError, RunError, LocalKafkaError, KafkaException, RegistryError, ValueError,
            OSError) as exc:  # fmt: skip
        run.failures.append(str(exc))
        console.print(f"[red]error:[/red] {exc}")
    finally:
        run.stop_workload()
        try:
            run.stop_services()
            if mode == "demo" and world is not None and not interrupted:
                run.scan_card_data()
        finally:
            run.stop_broker()
    if hasattr(run, "view") and run.view.figures:
        run.final_figures()
    if mode == "demo" and world is not None and not interrupted and not run.failures:
        with steps() as progress:
            progress.add_task("checking every decision against the offline replay")
            run.check(world)
    run.failures += run.scan_failures
    _mask_card_numbers(run)
    run.summary["elapsed"] = f"{time.monotonic() - began:.0f} s"
    run.summary["run directory"] = str(run_dir)
    if mode == "demo" and not interrupted:
        run.summary["checks"] = (
            "passed" if not run.failures else "FAILED: " + "; ".join(run.failures)
        )
    elif run.failures:
        run.summary["errors"] = "; ".join(run.failures)
    (run_dir / "summary.json").write_text(json.dumps(run.summary, indent=2, ensure_ascii=False))
    _print_summary(f"fraudstream {mode}", run.summary)
    if run.failures:
        return 1
    if interrupted and mode == "demo":
        return 130
    return 0


def _mask_card_numbers(run: StackRun) -> None:
    """summary.json is written (and the summary printed) after the scan, and it quotes error texts
    of the services: a card number in it is masked, and counted as a failure like any other."""
    from scoring.card_data import find_card_numbers, mask_card_numbers

    for name, value in run.summary.items():
        hits = find_card_numbers(value.encode())
        if hits:
            run.summary[name] = mask_card_numbers(value.encode())[0].decode()
            run.failures.append(f"{len(hits)} card numbers in the summary's {name!r} (masked)")


def _print_summary(title: str, summary: dict[str, str]) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for name, value in summary.items():
        table.add_row(name, value)
    console.print(table)
