"""The chaos harness: a log replayed through a real broker, workers and API while faults run.

Shared by the CI profile (``tests/chaos/test_chaos.py``) and the long profile
(``benchmarks/chaos.py``); see docs/reliability.md.

* **Stack.** Its own ``LocalKafka`` on free ports with its own data directory (so restarting it
  disturbs nothing else), topics with 3 partitions, ``fraudstream worker`` subprocesses
  (``tests/integration/stream_harness.py``) and one ``fraudstream api`` subprocess.
* **Traffic.** The log is replayed at a fixed rate (``stream.replay``, one idempotent producer);
  beside it a client sends transactions to the API at a few per second. API transactions use a
  bank of their own, a fresh card each and no merchant or terminal, and an event time before the
  log's: they share no feature state with the log, so the log's decisions stay a function of the
  log alone.
* **Faults.** A schedule of kinds (:data:`FAULT_KINDS`) is run in order, each when the replay has
  produced a seeded random share of the log (the moments depend only on the seed): SIGKILL or
  SIGTERM of the worker and a restart, a broker restart (down, then up on the same data), workers
  scaled 1 → 3 → 1, the API restarted.
* **Verifier.** One read_committed consumer reads ``decisions`` and ``feature-log`` from the
  start while the run goes on (the timeline comes from it too). Against the input it counts
  transactions without a decision (lost), extra decisions (duplicated), and decisions or feature
  vectors that differ from the *reference*: the offline scoring of the same log (``replay_log``:
  the state rebuilt from the input, then the worker's own ``BatchScorer`` and record encoder).
  Decisions are compared field by field except timings and measured CPU cost
  (``stream_harness.comparable``); feature vectors bit for bit (that is the velocity state the
  model saw). API calls are checked separately: every call answered 2xx (connection errors while
  the API restarts are retried with the same id and body), never a 5xx, within the deadline plus a
  margin, and every non-degraded answer is the very record on ``decisions``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pyarrow as pa

from api.security import hash_key
from scoring.decision import policy_from
from scoring.features import FeatureEngine, replay_log
from scoring.messages import decision_records
from scoring.pipeline import BatchScorer
from scoring.registry import ModelRegistry
from scoring.settings import KafkaSettings, Settings
from stream.client_errors import ClientErrors
from stream.local_kafka import LocalKafka
from stream.replay import replay
from stream.topics import TopicNames, create_topics
from tests.integration.stream_harness import ApiProcess, Stack, WorkerProcess, comparable, metric

FAULT_KINDS = ("sigkill", "sigterm", "broker_restart", "scale_out_in", "api_restart")
# The CI profile: >= 3 worker kills (SIGKILL and SIGTERM), a broker restart, 1 -> 3 -> 1, the API.
CI_SCHEDULE = ("sigkill", "broker_restart", "sigterm", "scale_out_in", "sigkill", "api_restart")

API_BANK = "chaos-api"
API_KEY = "key-chaos-api-0123456789"
API_DEADLINE_MS = 250.0
API_DEADLINE_MARGIN_MS = 50.0  # the API's own overshoot allowance (it answers at the deadline)
API_RETRY_FOR_S = 120.0  # a call may retry across an API restart for this long
REFERENCE_CHUNK = 100_000


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def decision_digest(decision: dict[str, Any]) -> bytes:
    return digest(orjson.dumps(comparable(decision), option=orjson.OPT_SORT_KEYS))


def feature_digest(vector: np.ndarray) -> bytes:
    """Bit-exact, except that every NaN (a missing feature; JSON null online) is the same."""
    canonical = np.where(np.isnan(vector), np.nan, vector).astype(np.float64)
    return digest(canonical.tobytes())


# ------------------------------------------------------------------------------------ reference


@dataclass
class Reference:
    """What an uninterrupted run must decide: the log scored offline by the worker's own code."""

    ids: list[str]
    decisions: dict[str, bytes]  # transaction id -> digest of the comparable decision
    features: dict[str, bytes]  # transaction id -> digest of the feature vector
    summary: dict[str, tuple[float, str]]  # transaction id -> (score, action), for messages

    @classmethod
    def build(
        cls,
        transactions: pa.Table,
        labels: pa.Table | None,
        registry: Path,
        settings: Settings,
        progress: Callable[[str], None] = lambda _m: None,
    ) -> Reference:
        progress(f"reference: features of {transactions.num_rows:,} transactions")
        features = replay_log(transactions, labels, engine=FeatureEngine())
        model = ModelRegistry(registry).load(settings.scoring.model_ref, allow_gtil=True)
        scorer = BatchScorer(
            model,
            policy_from(settings),
            cpu_second_usd=settings.scoring.cpu_second_usd,
            max_reasons=settings.scoring.max_reasons,
            reasons_method=settings.scoring.reasons_method,
        )
        ids: list[str] = transactions.column("transaction_id").to_pylist()
        decisions: dict[str, bytes] = {}
        summary: dict[str, tuple[float, str]] = {}
        for start in range(0, transactions.num_rows, REFERENCE_CHUNK):
            progress(f"reference: decisions from row {start:,}")
            part = transactions.slice(start, REFERENCE_CHUNK)
            scored = scorer.decide(part, features[start : start + part.num_rows])
            # through the worker's encoder and back, as a reader of `decisions` sees them
            for record in decision_records(scored, np.zeros(part.num_rows)):
                decision = orjson.loads(record.value)
                decisions[decision["transaction_id"]] = decision_digest(decision)
                summary[decision["transaction_id"]] = (decision["score"], decision["action"])
        vectors = {tx_id: feature_digest(features[i]) for i, tx_id in enumerate(ids)}
        return cls(ids, decisions, vectors, summary)


# ----------------------------------------------------------------------------------- the broker


class ChaosBroker:
    """A broker of the run's own (free ports, own data dir) that can be restarted."""

    def __init__(self, root: Path, ports: Callable[[int], list[int]]) -> None:
        port, controller = ports(2)
        base = Settings().kafka
        local = base.model_copy(
            update={
                "bootstrap_servers": "",
                "local_port": port,
                "local_controller_port": controller,
                "local_dir": root / "kafka",
            }
        )
        self.local = LocalKafka(local)
        self.settings = local.model_copy(update={"bootstrap_servers": self.local.bootstrap})

    def up(self) -> None:
        self.local.up(timeout=180.0)

    def down(self) -> None:
        self.local.down(timeout=60.0)


# --------------------------------------------------------------------------------- the verifier


class Watcher(threading.Thread):
    """Reads ``decisions`` and ``feature-log`` (read_committed, from the start) while the run
    goes on; checks every record against the reference as it arrives."""

    def __init__(self, kafka: KafkaSettings, reference: Reference, started: float) -> None:
        super().__init__(name="chaos-watcher", daemon=True)
        self.kafka = kafka
        self.reference = reference
        self.started = started
        topics = TopicNames.from_settings(kafka)
        self.decisions_topic, self.features_topic = topics.decisions, topics.feature_log
        self.decided: Counter[str] = Counter()
        self.logged: Counter[str] = Counter()
        self.mismatched: dict[str, dict[str, Any]] = {}  # first differing record of each id
        self.feature_mismatched: set[str] = set()
        self.api_records: dict[str, list[dict[str, Any]]] = {}
        self.records = 0
        self.last_new = time.monotonic()
        self.errors: Counter[str] = Counter()
        # the broker restart's connection errors, counted here rather than printed by librdkafka
        # (dozens a second: they buried the failure message of a CI run)
        self.client_errors = ClientErrors(logging.getLogger("fraudstream.chaos.watcher"))
        self._halt = threading.Event()
        self.failure: BaseException | None = None

    def stop(self) -> None:
        self._halt.set()
        self.join(60)

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the harness, never swallowed
            self.failure = exc

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

        consumer = Consumer(
            {
                **self.kafka.client_config(),
                "group.id": f"chaos-verifier-{os.getpid()}-{time.monotonic_ns()}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                **self.client_errors.config(),
            }
        )
        assignment = []
        for topic in (self.decisions_topic, self.features_topic):
            partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
            assignment += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
        consumer.assign(assignment)
        try:
            while not self._halt.is_set():
                batch = consumer.consume(5000, 0.5)
                for message in batch:
                    error = message.error()
                    if error is not None:  # the broker restarting: librdkafka reconnects
                        if error.code() != KafkaError._PARTITION_EOF:
                            self.errors[error.name()] += 1
                        continue
                    if message.topic() == self.decisions_topic:
                        self._decision(message.value())
                    else:
                        self._feature_row(message.value())
                if batch:
                    self.last_new = time.monotonic()
        finally:
            consumer.close()

    def _decision(self, value: bytes) -> None:
        decision = orjson.loads(value)
        tx_id = decision["transaction_id"]
        self.records += 1
        self.decided[tx_id] += 1
        want = self.reference.decisions.get(tx_id)
        if want is None:
            self.api_records.setdefault(tx_id, []).append(decision)
        elif decision_digest(decision) != want and tx_id not in self.mismatched:
            self.mismatched[tx_id] = decision

    def _feature_row(self, value: bytes) -> None:
        row = orjson.loads(value)
        tx_id = row["transaction_id"]
        self.logged[tx_id] += 1
        want = self.reference.features.get(tx_id)
        if want is not None:
            vector = np.array([np.nan if v is None else v for v in row["features"]], np.float64)
            if feature_digest(vector) != want:
                self.feature_mismatched.add(tx_id)

    def quiet_for(self) -> float:
        return time.monotonic() - self.last_new


# ------------------------------------------------------------------------------------ API calls


@dataclass
class ApiCall:
    transaction_id: str
    sent_s: float  # since the run's start
    status: int  # 0: never answered
    attempts: int
    connection_errors: int
    client_ms: float  # of the answered attempt
    answer: dict[str, Any] | None = None


class ApiTraffic(threading.Thread):
    """Sends one transaction at a time to the API, ``rate`` per second; a call that fails at
    the connection level (the API restarting) is retried with the same id and body."""

    def __init__(self, url: str, rate: float, event_time: str, started: float) -> None:
        super().__init__(name="chaos-api-client", daemon=True)
        self.url = url
        self.interval = 1.0 / rate
        self.event_time = event_time
        self.started = started
        self.calls: list[ApiCall] = []
        self._halt = threading.Event()
        self.failure: BaseException | None = None

    def stop(self) -> None:
        self._halt.set()
        self.join(API_RETRY_FOR_S + 30)

    def body(self, i: int) -> dict[str, Any]:
        # One fresh card per call, no merchant/terminal, an event time before the log's: no
        # feature state is shared with the replayed log (module docstring).
        return {
            "transaction_id": f"chaos-api-{i:06d}",
            "card_id": f"chaos-card-{i:06d}",
            "timestamp": self.event_time,
            "amount": round(5.0 + (i * 37) % 900, 2),
            "currency": "EUR",
            "country": "FR",
            "channel": "ecom" if i % 3 else "pos",
        }

    def run(self) -> None:
        try:
            with httpx.Client(
                base_url=self.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
            ) as client:
                i = 0
                while not self._halt.is_set():
                    self.calls.append(self.call(client, self.body(i)))
                    i += 1
                    self._halt.wait(self.interval)
        except BaseException as exc:
            self.failure = exc

    def call(self, client: httpx.Client, body: dict[str, Any]) -> ApiCall:
        sent = time.monotonic()
        attempts = errors = 0
        while time.monotonic() - sent < API_RETRY_FOR_S:
            attempts += 1
            began = time.perf_counter()
            try:
                response = client.post("/v1/transactions", json=body)
            except httpx.TransportError:  # refused / reset while the API restarts
                errors += 1
                time.sleep(0.2)
                continue
            elapsed = (time.perf_counter() - began) * 1000
            answer = response.json() if response.status_code == 200 else None
            return ApiCall(
                body["transaction_id"], sent - self.started, response.status_code, attempts,
                errors, elapsed, answer,
            )  # fmt: skip
        return ApiCall(body["transaction_id"], sent - self.started, 0, attempts, errors, 0.0)


# ---------------------------------------------------------------------------------- the report


@dataclass
class Fault:
    kind: str
    at_s: float  # since the run's start
    recovered_s: float  # from the fault to the service being back (ready)
    detail: str


@dataclass
class Sample:
    t_s: float
    produced: int
    decision_records: int
    api_calls: int


@dataclass
class ChaosReport:
    seed: int
    transactions: int
    labels: int
    rate: float
    faults: list[Fault]
    samples: list[Sample]
    checked: int  # log transactions compared with the reference
    lost: int
    duplicated: int  # decision records beyond the first of a transaction
    mismatched: int
    feature_rows_missing: int
    feature_rows_duplicated: int
    feature_mismatched: int
    examples: list[str]
    api: dict[str, Any]
    exits: dict[str, int]  # SIGTERMed processes: name -> exit code (0 expected)
    unplanned_exits: list[dict[str, Any]]  # workers that exited by themselves (and restarted)
    consumer_errors: dict[str, int]
    seconds: float

    def faults_by_kind(self) -> dict[str, int]:
        return dict(Counter(f.kind for f in self.faults))

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "faults_by_kind": self.faults_by_kind()}


# ------------------------------------------------------------------------------------- schedule


def fault_moments(kinds: tuple[str, ...] | list[str], rng: random.Random) -> list[float]:
    """When (share of the log produced) each fault starts: one per equal slot of [0.05, 0.9],
    at a random point of its middle half."""
    k = len(kinds)
    width = 0.85 / k
    return [0.05 + width * (i + rng.uniform(0.25, 0.75)) for i in range(k)]


def long_schedule(count: int, rng: random.Random) -> list[str]:
    """``count`` faults: every kind at least once, then the worker kinds twice as often."""
    base = list(FAULT_KINDS)
    pool = ["sigkill", "sigkill", "sigterm", "sigterm", "broker_restart", "scale_out_in",
            "api_restart"]  # fmt: skip
    kinds = base + [rng.choice(pool) for _ in range(max(count - len(base), 0))]
    rng.shuffle(kinds)
    return kinds


# ------------------------------------------------------------------------------------- the run


@dataclass
class ChaosRun:
    transactions: pa.Table
    labels: pa.Table | None
    registry: Path
    root: Path
    ports: Callable[[int], list[int]]
    schedule: list[str]
    seed: int
    rate: float  # log transactions per second
    api_rate: float = 4.0
    reference: Reference | None = None
    log: Callable[[str], None] = print
    on_sample: Callable[[Sample], None] = lambda _s: None
    # filled while running
    faults: list[Fault] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    exits: dict[str, int] = field(default_factory=dict)
    resent: dict[str, Any] = field(default_factory=lambda: {"resent": 0, "same": 0, "differ": []})
    traffic: ApiTraffic | None = None
    unplanned: list[dict[str, Any]] = field(default_factory=list)

    def run(self) -> ChaosReport:
        unknown = set(self.schedule) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
        rng = random.Random(self.seed)
        moments = fault_moments(self.schedule, rng)
        settings = Settings()
        if self.reference is None:
            self.reference = Reference.build(
                self.transactions, self.labels, self.registry, settings, self.log
            )
        broker = ChaosBroker(self.root, self.ports)
        self.log(f"chaos seed {self.seed}: broker on {broker.settings.bootstrap_servers}")
        broker.up()
        kafka = broker.settings.model_copy(update={"topic_prefix": "chaos.", "partitions": 3})
        create_topics(kafka)
        env = {
            **os.environ,
            "FRAUD_KAFKA__BOOTSTRAP_SERVERS": broker.settings.bootstrap_servers,
            "PYTHONFAULTHANDLER": "1",  # SIGABRT dumps every thread's stack (stop_or_kill)
        }
        stack = Stack(kafka, env, self.registry, self.root, self.ports)
        api: ApiProcess | None = None
        watcher: Watcher | None = None
        traffic: ApiTraffic | None = None
        try:
            worker = stack.start("w1")
            worker.wait_ready()
            api_env = {
                **env,
                "FRAUD_KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
                "FRAUD_API__API_KEYS": json.dumps({API_BANK: [hash_key(API_KEY)]}),
                "FRAUD_API__DEADLINE_MS": str(API_DEADLINE_MS),
            }
            (api_port,) = self.ports(1)
            api = ApiProcess.start(api_env, api_port, self.registry, self.root / "api.log")
            api.wait_ready()

            started = time.monotonic()
            watcher = Watcher(kafka, self.reference, started)
            watcher.start()
            first = self.transactions.column("timestamp")[0].as_py() - timedelta(days=1)
            stamp = first.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            traffic = ApiTraffic(api.url, self.api_rate, stamp, started)
            traffic.start()
            self.traffic = traffic
            sent = [0]
            replay_result: dict[str, Any] = {}

            def produce() -> None:
                def count(n: int) -> None:
                    sent[0] += n

                try:
                    replay_result["summary"] = replay(
                        self.transactions, self.labels, kafka=kafka, rate=self.rate,
                        on_progress=count,
                    )  # fmt: skip
                except BaseException as exc:
                    replay_result["error"] = exc

            producer = threading.Thread(target=produce, name="chaos-replay", daemon=True)
            producer.start()
            sampling = threading.Event()
            sampler = threading.Thread(
                target=self._sample, args=(started, sent, watcher, traffic, sampling), daemon=True
            )
            sampler.start()

            n = self.transactions.num_rows
            for kind, moment in zip(self.schedule, moments, strict=True):
                while sent[0] < moment * n and producer.is_alive():
                    worker = self._revive(stack, worker, started)
                    time.sleep(0.1)
                time.sleep(rng.uniform(0.0, 1.5))  # not always right after a replay chunk
                at = time.monotonic()
                self.log(f"[{at - started:6.1f} s] fault {kind} at {sent[0]:,}/{n:,} produced")
                worker, api, detail = self._fault(kind, rng, broker, stack, worker, api, api_env)
                fault = Fault(kind, at - started, time.monotonic() - at, detail)
                self.faults.append(fault)
                self.log(f"           recovered in {fault.recovered_s:.1f} s: {detail}")
            producer.join()
            if "error" in replay_result:
                raise replay_result["error"]
            summary = replay_result["summary"]
            self.log(
                f"replay: {summary.transactions:,} sent, client errors {summary.client_errors}"
            )
            assert summary.failed == 0, f"{summary.failed} replayed messages were not delivered"
            traffic.stop()
            expected = n + len(traffic.calls)
            worker = self._wait_complete(watcher, expected, stack, worker, started)
            sampling.set()
            sampler.join(5)
            watcher.stop()
            if watcher.failure is not None:
                raise watcher.failure
            if traffic.failure is not None:
                raise traffic.failure
            self.exits["w1 (end)"] = stop_or_kill(worker.process)
            self.exits["api (end)"] = stop_or_kill(api.process)
            return self._report(watcher, traffic, self.resent, time.monotonic() - started)
        finally:
            # every step on its own: a failing one must not leave processes behind
            steps: list[Callable[[], object]] = [stack.close, broker.down]
            if api is not None and api.process.poll() is None:
                steps.insert(0, api.process.kill)
            if watcher is not None and watcher.is_alive():
                steps.insert(0, watcher.stop)
            if traffic is not None and traffic.is_alive():
                steps.insert(0, traffic.stop)
            for step in steps:
                try:
                    step()
                except Exception as exc:
                    self.log(f"cleanup: {step}: {exc!r}")

    # ---------------------------------------------------------------------------- the faults

    def _fault(
        self,
        kind: str,
        rng: random.Random,
        broker: ChaosBroker,
        stack: Stack,
        worker: WorkerProcess,
        api: ApiProcess,
        api_env: dict[str, str],
    ) -> tuple[WorkerProcess, ApiProcess, str]:
        if kind == "sigkill":
            worker.kill()
            worker = stack.start(worker.name)  # same instance: same state dir, group member
            worker.wait_ready()
            return worker, api, "worker SIGKILLed and restarted"
        if kind == "sigterm":
            code = stop_or_kill(worker.process)
            self.exits[f"{worker.name} SIGTERM #{len(self.exits)}"] = code
            worker = stack.start(worker.name)
            worker.wait_ready()
            return worker, api, f"worker SIGTERMed (exit {code}) and restarted"
        if kind == "broker_restart":
            broker.down()
            down_for = rng.uniform(1.0, 4.0)
            time.sleep(down_for)
            broker.up()
            return worker, api, f"broker down {down_for:.1f} s + its restart"
        if kind == "scale_out_in":
            return worker, api, self._scale_out_in(stack)
        if kind == "api_restart":
            code = stop_or_kill(api.process)
            self.exits[f"api SIGTERM #{len(self.exits)}"] = code
            api = ApiProcess.start(api_env, api.port, self.registry, api.log)
            api.wait_ready()
            assert self.traffic is not None
            resent, same = self._resend_answered(self.traffic, api.url)
            return (
                worker,
                api,
                (
                    f"API SIGTERMed (exit {code}) and restarted; {same} of {resent} answers given "
                    "before it given again"
                ),
            )
        raise ValueError(kind)

    def _scale_out_in(self, stack: Stack) -> str:
        """Two more workers join (1 -> 3), each decides, then both leave (3 -> 1)."""
        scale = sum(1 for w in stack.workers if w.name.startswith("scale"))
        extra = [stack.start(f"scale{scale + i}") for i in (1, 2)]
        for w in extra:
            w.wait_ready(timeout=300)

        def decided(w: WorkerProcess) -> float:
            with contextlib.suppress(AssertionError, OSError):
                return metric(w.metrics(), "fraudstream_stream_events_total", direction="out")
            return 0.0

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(decided(w) > 0 for w in extra):
            time.sleep(0.5)
        counts = [decided(w) for w in extra]
        for w in extra:
            self.exits[f"{w.name} scale-in"] = stop_or_kill(w.process)
        return "1 -> 3 -> 1 workers; the two extra decided " + " and ".join(
            f"{c:,.0f}" for c in counts
        )

    # ------------------------------------------------------------------------------ helpers

    def _sample(
        self,
        started: float,
        sent: list[int],
        watcher: Watcher,
        traffic: ApiTraffic,
        done: threading.Event,
    ) -> None:
        while not done.wait(1.0):
            sample = Sample(
                round(time.monotonic() - started, 2), sent[0], watcher.records, len(traffic.calls)
            )
            self.samples.append(sample)
            self.on_sample(sample)

    def _resend_answered(self, traffic: ApiTraffic, url: str) -> tuple[int, int]:
        """Right after an API restart: send again (same id and body) the last 20 calls answered
        non-degraded before it; the restarted API must give the same answers (it read the
        decisions back from the topic)."""
        answered = [c for c in list(traffic.calls) if c.answer is not None]
        before = [c for c in answered if c.answer and not c.answer["degraded"]]
        same = 0
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
        ) as client:
            for call in before[-20:]:
                i = int(call.transaction_id.rsplit("-", 1)[1])
                again = client.post("/v1/transactions", json=traffic.body(i))
                # the same decision; timings may differ when the first answer was read before
                # its Kafka transaction committed and then redone (docs/api.md, "Answering
                # before the commit")
                if again.status_code == 200 and comparable(again.json()) == comparable(call.answer):
                    same += 1
                elif len(self.resent["differ"]) < 3:
                    self.resent["differ"].append(
                        {"first": call.answer, "status": again.status_code, "again": again.text}
                    )
        self.resent["resent"] += len(before[-20:])
        self.resent["same"] += same
        return len(before[-20:]), same

    def _wait_complete(
        self,
        watcher: Watcher,
        expected: int,
        stack: Stack,
        worker: WorkerProcess,
        started: float,
        quiet: float = 5.0,
    ) -> WorkerProcess:
        """Until every expected transaction is decided and nothing new came for ``quiet`` s
        (to see late duplicates), or 2 minutes without a new record."""
        while True:
            worker = self._revive(stack, worker, started)
            if watcher.failure is not None:
                return worker
            complete = len(watcher.decided) >= expected
            if complete and watcher.quiet_for() >= quiet:
                return worker
            if watcher.quiet_for() >= 120:
                return worker
            time.sleep(0.5)

    def _revive(self, stack: Stack, worker: WorkerProcess, started: float) -> WorkerProcess:
        """What a supervisor (Kubernetes, systemd) does for a worker that exited by itself: start
        it again. Every such exit is recorded in the report (``unplanned_exits``)."""
        code = worker.process.poll()
        if code is None:
            return worker
        at = time.monotonic() - started
        self.unplanned.append({"at_s": round(at, 1), "worker": worker.name, "exit": code})
        self.log(f"[{at:6.1f} s] worker {worker.name} exited by itself ({code}); restarting it")
        worker = stack.start(worker.name)
        worker.wait_ready()
        return worker

    def _outages(self) -> list[tuple[float, float]]:
        """When the broker was away (seconds since the start), with a little slack either side."""
        return [
            (f.at_s - OUTAGE_SLACK_S, f.at_s + f.recovered_s + OUTAGE_SLACK_S)
            for f in self.faults
            if f.kind == "broker_restart"
        ]

    def _report(
        self, watcher: Watcher, traffic: ApiTraffic, resent: dict[str, Any], seconds: float
    ) -> ChaosReport:
        assert self.reference is not None
        ref = self.reference
        lost = [i for i in ref.ids if i not in watcher.decided]
        duplicated = sum(c - 1 for c in watcher.decided.values() if c > 1)
        examples = [f"lost: {i}" for i in lost[:3]]
        examples += [f"decided {c} times: {i}" for i, c in watcher.decided.items() if c > 1][:3]
        for tx_id, got in list(watcher.mismatched.items())[:3]:
            score, action = ref.summary[tx_id]
            examples.append(
                f"differs: {tx_id}: online {comparable(got)} vs reference score {score!r} "
                f"action {action}"
            )
        logged_missing = sum(1 for i in ref.ids if i not in watcher.logged)
        logged_twice = sum(c - 1 for i, c in watcher.logged.items() if c > 1)
        return ChaosReport(
            seed=self.seed,
            transactions=len(ref.ids),
            labels=0 if self.labels is None else self.labels.num_rows,
            rate=self.rate,
            faults=self.faults,
            samples=self.samples,
            checked=sum(1 for i in ref.ids if i in watcher.decided),
            lost=len(lost),
            duplicated=duplicated,
            mismatched=len(watcher.mismatched),
            feature_rows_missing=logged_missing,
            feature_rows_duplicated=logged_twice,
            feature_mismatched=len(watcher.feature_mismatched),
            examples=examples,
            api=api_summary(traffic.calls, watcher.api_records, resent, self._outages()),
            exits=self.exits,
            unplanned_exits=self.unplanned,
            consumer_errors=dict(watcher.errors + watcher.client_errors.by_name),
            seconds=seconds,
        )


# Longer than the worker's own bound on a stalled transaction call (15 s + 5 s, then it replaces
# its producer, and exits with EXIT_TXN_HUNG if calls pile up stuck): a hung worker says so
# itself before it gets SIGABRT.
STOP_TIMEOUT_S = 100.0
OUTAGE_SLACK_S = 5.0
NO_EXIT = 999  # the exit code recorded for a process that ignored SIGTERM (then killed)


def stop_or_kill(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM; the exit code, or NO_EXIT if it did not exit in time. Then it gets SIGABRT
    first: with PYTHONFAULTHANDLER set, Python writes every thread's stack to its log, which
    says where it hung; SIGKILL if even that does not end it."""
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)
        return NO_EXIT


def _same_decision(answer: dict[str, Any], on_topic: dict[str, list[dict[str, Any]]]) -> bool:
    records = on_topic.get(answer["transaction_id"], [])
    return comparable(answer) in [comparable(r) for r in records]


def api_summary(
    calls: list[ApiCall],
    on_topic: dict[str, list[dict[str, Any]]],
    resent: dict[str, Any],
    outages: list[tuple[float, float]],
) -> dict[str, Any]:
    """What the API calls saw, checked against the decisions topic.

    A call made while the broker was away may never reach the stream, by design: the API's
    producer gives a transaction up after ``message.timeout.ms`` (30 s; docs/api.md) and its
    fallback answer stands. Such calls are counted apart (and their answers must be degraded);
    any other call without a decision on the topic is lost."""
    missing = [c for c in calls if not on_topic.get(c.transaction_id)]
    during_outage = [c for c in missing if any(lo <= c.sent_s <= hi for lo, hi in outages)]
    answered = [c for c in calls if c.status == 200 and c.answer is not None]
    degraded = [c for c in answered if c.answer and c.answer["degraded"]]
    clean = [c for c in answered if c.answer and not c.answer["degraded"]]
    first_try = [c.client_ms for c in answered if c.connection_errors == 0]
    server_ms = [float(c.answer["latency_ms"]) for c in answered if c.answer]
    return {
        "calls": len(calls),
        "answered_2xx": len(answered),
        "status_5xx": sum(1 for c in calls if c.status >= 500),
        "status_other": sorted({c.status for c in calls if c.status not in (200,)}),
        "unanswered": sum(1 for c in calls if c.status == 0),
        "retried_after_connection_errors": sum(1 for c in calls if c.connection_errors),
        "degraded": len(degraded),
        "not_degraded": len(clean),
        "deadline_ms": API_DEADLINE_MS,
        "server_latency_ms_max": max(server_ms, default=0.0),
        "client_ms_p50": float(np.median(first_try)) if first_try else 0.0,
        "client_ms_p99": float(np.quantile(first_try, 0.99)) if first_try else 0.0,
        "client_ms_max": max(first_try, default=0.0),
        "over_deadline_client": sum(
            1 for ms in first_try if ms > API_DEADLINE_MS + API_DEADLINE_MARGIN_MS
        ),
        "decided_on_topic": sum(1 for c in calls if on_topic.get(c.transaction_id)),
        "not_delivered_during_broker_outage": len(during_outage),
        "not_delivered_answered_degraded": sum(
            1 for c in during_outage if c.answer is not None and c.answer["degraded"]
        ),
        "lost_on_topic": len(missing) - len(during_outage),
        "duplicated_on_topic": sum(
            len(on_topic[c.transaction_id]) - 1 for c in calls if on_topic.get(c.transaction_id)
        ),
        # all but timings and CPU cost: the API answers from read_uncommitted decisions, and a
        # redo after an aborted Kafka transaction supersedes the record it answered with
        "answer_differs_from_topic": sum(
            1 for c in clean if c.answer and not _same_decision(c.answer, on_topic)
        ),
        "answer_superseded_on_topic": sum(
            1 for c in clean if c.answer and c.answer not in on_topic.get(c.transaction_id, [])
        ),
        "resent_after_restart": resent["resent"],
        "resent_same_answer": resent["same"],
        "resent_differ_examples": resent["differ"],
        # per call: seconds since the start, API-side ms, client ms (0: retried), degraded
        "series": [
            [
                round(c.sent_s, 2),
                round(float(c.answer["latency_ms"]), 1),
                round(c.client_ms, 1) if c.connection_errors == 0 else 0.0,
                bool(c.answer["degraded"]),
            ]
            for c in answered
            if c.answer
        ],
    }
