"""Stream worker throughput and latency on a real broker, beside a faust worker doing the same work.

On this machine (broker, producer, worker and reader share its cores):

1. **Drain** — ``--transactions`` simulated transactions (and their labels) are replayed into
   fresh topics first; then one worker decides the backlog. A read_committed reader counts the
   decisions as they become visible. Sustained throughput is the rate between 10 % and 90 % of the
   decisions (start-up excluded); CPU is the worker process's user+system time (librdkafka
   threads included) per decision, and the production worker's per-stage time comes from its
   /metrics. Engines: the production worker (``fraudstream worker``: confluent-kafka, Kafka
   transactions, every partition merged) and ``benchmarks/faust_worker.py`` (faust-streaming,
   at-least-once, the same batch function ``scoring.messages.process_transactions``).
2. **Live latency** — the worker runs first, then the log is replayed at ``--rate`` transactions per
   second; the reader measures, per decision, the time from the transaction's Kafka timestamp to
   the decision being readable (committed), and the worker's own ``latency_ms`` (to the decision
   being computed). p50 / p99 / p99.9, over the transactions sent after the first
   ``--live-warmup-s`` seconds: in those, every client's first requests (the replay producer's
   connection and producer id, the worker's first Kafka transaction on new topics) took up to a few
   hundred ms, which in a 15 s run was the whole p99. Their count and worst latencies are reported
   beside the percentiles.

Writes results/stream_throughput.{json,md,png}.

    .venv/bin/python benchmarks/stream_throughput.py                        # 1M, ~40 min
    .venv/bin/python benchmarks/stream_throughput.py --transactions 200000 --no-faust  # quick
    .venv/bin/python benchmarks/stream_throughput.py --log-transactions T --log-labels L \
        --out DIR          # a given log: a champion is trained on its first half first
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import typer

from scoring.registry import ModelRegistry
from scoring.settings import KafkaSettings, Settings
from stream.local_kafka import LocalKafka
from stream.replay import replay
from stream.topics import TopicNames, create_topics
from training.simulator import SimulationConfig, simulate
from training.train import train_and_register

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
CACHE = ROOT / ".cache"
TX_PER_CARD_PER_DAY = 1.65  # the simulator's average: sizes the card population for N rows


def free_ports(count: int) -> list[int]:
    """``count`` free loopback ports (the other benchmarks use this one too)."""
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def started_broker(prefix: str) -> tuple[LocalKafka, KafkaSettings, Path]:
    """A local broker (KRaft, from its jars) on free ports in a new temporary folder, up, with
    the project's topics: ``(broker, settings to reach it, folder)``. The caller stops it."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    broker_port, controller_port = free_ports(2)
    local = KafkaSettings(
        local_dir=work / "broker", local_port=broker_port, local_controller_port=controller_port
    )
    broker = LocalKafka(local)
    broker.up(timeout=180)
    try:
        create_topics(local.model_copy(update={"bootstrap_servers": broker.bootstrap}))
    except BaseException:
        broker.down()
        raise
    return broker, local, work


# ----------------------------------------------------------------------------------- inputs


def prepare(n: int, seed: int) -> tuple[pa.Table, pa.Table, Path]:
    """A simulated month of about ``n`` transactions, and a champion trained on its first half
    (cached under benchmarks/.cache: simulating and training take minutes)."""
    days = 30
    cards = max(int(n / days / TX_PER_CARD_PER_DAY), 100)
    folder = CACHE / f"stream-{cards}-{days}-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    tx_file, label_file = folder / "transactions.parquet", folder / "labels.parquet"
    if not tx_file.exists():
        print(f"simulating {cards} cards x {days} days ...", flush=True)
        transactions, labels = simulate(SimulationConfig(days=days, cards=cards, seed=seed))
        pq.write_table(transactions, tx_file)
        pq.write_table(labels, label_file)
    transactions, labels = pq.read_table(tx_file), pq.read_table(label_file)
    registry_dir = folder / "registry"
    registry = ModelRegistry(registry_dir)
    if "champion" not in registry.aliases():
        print("training the champion on the first two weeks ...", flush=True)
        start: datetime = transactions.column("timestamp")[0].as_py()
        model = train_and_register(
            transactions, labels, registry=registry, until=start + timedelta(days=14), seed=1
        )
        registry.promote(model.version)
    return transactions, labels, registry_dir


def prepare_log(
    transactions_path: Path, labels_path: Path, work: Path
) -> tuple[pa.Table, pa.Table, Path]:
    """A given log (in time order) and a champion trained on the first half of its time span,
    with the labels reported by then, in a registry under ``work``."""
    from scoring.logs import read_labels, read_transactions

    transactions = read_transactions(transactions_path)
    labels = read_labels(labels_path)
    transactions = transactions.take(pc.sort_indices(transactions, [("timestamp", "ascending")]))
    first = transactions.column("timestamp")[0].as_py()
    last = transactions.column("timestamp")[-1].as_py()
    half = first + (last - first) / 2
    known = labels.filter(
        pc.less(labels["reported_at"], pa.scalar(half, labels.schema.field("reported_at").type))
    )
    registry = ModelRegistry(work / "registry")
    print(
        f"training a champion on {transactions_path.name} until {half:%Y-%m-%d %H:%M} ...",
        flush=True,
    )
    model = train_and_register(transactions, known, registry=registry, until=half, seed=1)
    registry.promote(model.version)
    return transactions, labels, work / "registry"


# ---------------------------------------------------------------------------- measurement


@dataclass
class Reader:
    """Counts (and for latency runs, times) decisions as they become visible (read_committed)."""

    kafka: KafkaSettings
    topic: str
    keep_latency: bool = False
    samples: list[tuple[float, int]] = field(default_factory=list)
    visible_ms: list[float] = field(default_factory=list)
    computed_ms: list[float] = field(default_factory=list)
    arrived_ms: list[float] = field(default_factory=list)  # the transactions' Kafka timestamps
    count: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Reader:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        consumer = Consumer(
            {
                **self.kafka.client_config(),
                "group.id": f"bench-reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 5,
            }
        )
        partitions = consumer.list_topics(self.topic, timeout=30).topics[self.topic].partitions
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
        while not self._stop.is_set():
            batch = consumer.consume(10_000, 0.005)  # short: the wait would count as latency
            now_ms = time.time() * 1000.0
            for message in batch:
                if message.error() is not None:
                    continue
                self.count += 1
                if self.keep_latency:
                    decision = orjson.loads(message.value())
                    decided = datetime.fromisoformat(decision["decided_at"]).timestamp() * 1000
                    arrived = decided - decision["latency_ms"]
                    self.visible_ms.append(now_ms - arrived)
                    self.computed_ms.append(decision["latency_ms"])
                    self.arrived_ms.append(arrived)
            self.samples.append((time.monotonic(), self.count))
        consumer.close()

    def wait_for(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.count < n and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.count >= n

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def sustained_rate(self, n: int) -> float:
        """Decisions per second between 10 % and 90 % of ``n``."""
        times = np.array([t for t, _ in self.samples])
        counts = np.array([c for _, c in self.samples])
        t10 = times[np.searchsorted(counts, 0.1 * n)]
        t90 = times[np.searchsorted(counts, 0.9 * n)]
        return 0.8 * n / (t90 - t10)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def _metric_sums(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            out[labels.get("stage", "")] = float(line.rsplit(" ", 1)[1])
    return out


@dataclass
class Deployment:
    base: KafkaSettings
    registry: Path
    partitions: int
    work: Path

    def topics(self, label: str) -> KafkaSettings:
        kafka = self.base.model_copy(
            update={"topic_prefix": f"bench-{label}-{uuid.uuid4().hex[:6]}.",
                    "partitions": self.partitions}
        )  # fmt: skip
        create_topics(kafka)
        return kafka

    def start_worker(
        self, kafka: KafkaSettings, name: str, extra_env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen[bytes], int]:
        (port,) = free_ports(1)
        env = {
            **os.environ,
            **(extra_env or {}),
            "FRAUD_KAFKA__BOOTSTRAP_SERVERS": str(kafka.bootstrap_servers),
            "FRAUD_KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
            "FRAUD_SCORING__REGISTRY": str(self.registry),
            "FRAUD_STREAM__STATE_DIR": str(self.work / "state"),
            "FRAUD_STREAM__GROUP_ID": f"bench-{name}",
        }
        log = open(self.work / f"{name}.log", "wb")  # noqa: SIM115 -- the child's
        worker = subprocess.Popen(
            [sys.executable, "-m", "fraudstream", "worker", "--instance", name,
             "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return worker, port
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"worker {name} not ready; see {self.work / (name + '.log')}")

    def start_faust(
        self, kafka: KafkaSettings, name: str, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.work / f"{name}.log", "wb")  # noqa: SIM115 -- the child's
        return subprocess.Popen(
            [sys.executable, str(ROOT / "faust_worker.py"), "--bootstrap",
             str(kafka.bootstrap_servers), "--topic-prefix", kafka.topic_prefix,
             "--registry", str(self.registry), "--data-dir", str(self.work / name),
             "--web-port", str(free_ports(1)[0])],
            stdout=subprocess.PIPE, stderr=log, env={**os.environ, **(extra_env or {})},
        )  # fmt: skip


def drain(
    deployment: Deployment,
    engine: str,
    reasons: str,
    transactions: pa.Table,
    labels: pa.Table,
    timeout: float,
) -> dict[str, Any]:
    n = transactions.num_rows
    kafka = deployment.topics(engine)
    env = {"FRAUD_SCORING__REASONS_METHOD": reasons}
    engine_label = f"{engine}, {reasons} reasons"
    started = time.monotonic()
    summary = replay(transactions, labels, kafka=kafka)
    print(
        f"[{engine} {reasons}] backlog of {n:,} written in {time.monotonic() - started:.1f} s",
        flush=True,
    )
    reader = Reader(kafka, TopicNames.from_settings(kafka).decisions).start()
    port = None
    if engine == "confluent":
        process, port = deployment.start_worker(kafka, f"drain-{reasons}", env)
    else:
        process = deployment.start_faust(kafka, f"faust-{reasons}", env)
    began = time.monotonic()
    finished = reader.wait_for(n, timeout)
    wall = time.monotonic() - began
    cpu = _cpu_seconds(process.pid)
    stages: dict[str, float] = {}
    if port is not None:
        text = _metrics(port)
        sums = _metric_sums(text, "fraudstream_stream_stage_duration_seconds_sum")
        stages = {stage: seconds / n * 1e6 for stage, seconds in sums.items()}
        loop_cpu = _metric_sums(text, "fraudstream_stream_cpu_seconds_total")[""]
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
    reader.stop()
    result = {
        "engine": engine_label,
        "production": engine == "confluent",
        "reasons": reasons,
        "transactions": n,
        "labels": summary.labels,
        "decided": reader.count,
        "finished": finished,
        "wall_seconds": wall,
        "sustained_per_second": reader.sustained_rate(n) if finished else None,
        "overall_per_second": reader.count / wall,
        "cpu_us_per_transaction": cpu / max(reader.count, 1) * 1e6,
        "stage_us_per_transaction": stages,
        "curve": [(t - began, c) for t, c in reader.samples[:: max(len(reader.samples) // 400, 1)]],
    }
    if port is not None:
        result["loop_cpu_us_per_transaction"] = loop_cpu / n * 1e6
    rate = result["sustained_per_second"] or result["overall_per_second"]
    print(f"[{engine_label}] {reader.count:,} decisions, {rate:,.0f}/s sustained, "
          f"{result['cpu_us_per_transaction']:.1f} CPU-µs each", flush=True)  # fmt: skip
    return result


def live_latency(
    deployment: Deployment,
    transactions: pa.Table,
    labels: pa.Table,
    rate: float,
    reasons: str,
    warmup_s: float,
) -> dict[str, Any]:
    kafka = deployment.topics("live")
    reader = Reader(kafka, TopicNames.from_settings(kafka).decisions, keep_latency=True).start()
    env = {"FRAUD_SCORING__REASONS_METHOD": reasons}
    process, _port = deployment.start_worker(kafka, f"live-{reasons}-{rate:.0f}", env)
    n = transactions.num_rows
    measured_from_ms = (time.time() + warmup_s) * 1000.0
    summary = replay(transactions, labels, kafka=kafka, rate=rate)
    reader.wait_for(n, 120)
    process.send_signal(signal.SIGTERM)
    process.wait(60)
    reader.stop()
    measured = np.asarray(reader.arrived_ms) >= measured_from_ms
    all_visible, all_computed = np.asarray(reader.visible_ms), np.asarray(reader.computed_ms)
    visible, warm_visible = all_visible[measured], all_visible[~measured]
    computed, warm_computed = all_computed[measured], all_computed[~measured]

    def pct(values: np.ndarray) -> dict[str, float]:
        return {f"p{q:g}": float(np.percentile(values, q)) for q in (50, 90, 99, 99.9)} | {
            "max": float(values.max())
        }

    result = {
        "reasons": reasons,
        "rate_target": rate,
        "rate_achieved": n / summary.seconds,
        "transactions": n,
        "decided": reader.count,
        "visible_ms": pct(visible),
        "computed_ms": pct(computed),
        "visible_sample": visible[:: max(len(visible) // 5000, 1)].tolist(),
        "warmup": {
            "seconds": warmup_s,
            "transactions": int(warm_visible.size),
            "computed_max_ms": float(warm_computed.max()) if warm_computed.size else None,
            "visible_max_ms": float(warm_visible.max()) if warm_visible.size else None,
        },
    }
    seen = result["visible_ms"]
    print(f"[live, {reasons} reasons] {rate:,.0f}/s: decision visible p50 {seen['p50']:.1f} ms, "
          f"p99 {seen['p99']:.1f} ms, p99.9 {seen['p99.9']:.1f} ms", flush=True)  # fmt: skip
    return result


# -------------------------------------------------------------------------------- reports


def _warmup_lines(warmup: dict[str, Any] | None) -> list[str]:
    """The sentence on a live run's unmeasured start (absent in results of older runs)."""
    if not warmup or not warmup.get("transactions"):
        return []
    return [
        f"Measured after a {warmup['seconds']:g} s warm-up. The warm-up's "
        f"{warmup['transactions']:,} transactions, not in the table, took at most "
        f"{warmup['computed_max_ms']:.1f} ms to their decision computed and "
        f"{warmup['visible_max_ms']:.1f} ms to it committed and read.",
        "",
    ]


def write_reports(results: dict[str, Any], out: Path = RESULTS) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "stream_throughput.json").write_text(json.dumps(results, indent=2))
    lines = [
        "# Stream worker: throughput and latency",
        "",
        f"{results['machine']}; {results.get('source', 'simulated month')}; "
        f"{results['partitions']} partitions; one worker; broker, "
        "producer, worker and reader on the same machine.",
        "",
        "## Drain a backlog (same batch work, two engines)",
        "",
        "| engine | transactions | sustained decisions/s | overall/s | CPU-µs per transaction |",
        "|---|---:|---:|---:|---:|",
    ]
    for run in results["drain"]:
        sustained = run["sustained_per_second"]
        lines.append(
            f"| {run['engine']} | {run['transactions']:,} | "
            f"{sustained:,.0f} | {run['overall_per_second']:,.0f} | "
            f"{run['cpu_us_per_transaction']:.1f} |"
            if sustained
            else f"| {run['engine']} | {run['transactions']:,} | did not finish "
            f"({run['decided']:,} in {run['wall_seconds']:.0f} s) | "
            f"{run['overall_per_second']:,.0f} | {run['cpu_us_per_transaction']:.1f} |"
        )
    production = [r for r in results["drain"] if r["production"]]
    if production:
        lines += ["", "Production worker, wall time per stage (µs per transaction):", ""]
        lines += ["| stage | " + " | ".join(f"{r['reasons']} reasons" for r in production) + " |"]
        lines += ["|---|" + "---:|" * len(production)]
        for stage in production[0]["stage_us_per_transaction"]:
            cells = " | ".join(
                f"{r['stage_us_per_transaction'].get(stage, 0.0):.1f}" for r in production
            )
            lines.append(f"| {stage} | {cells} |")
        cells = " | ".join(f"{r['loop_cpu_us_per_transaction']:.1f}" for r in production)
        lines.append(f"| loop CPU (all stages) | {cells} |")
    for live in results.get("live", []):
        lines += [
            "",
            f"## Live: {live['rate_achieved']:,.0f} transactions/s replayed into a running worker "
            f"({live['reasons']} reasons)",
            "",
            *_warmup_lines(live.get("warmup")),
            "| latency (ms) | p50 | p90 | p99 | p99.9 | max |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for key, title in (
            ("computed_ms", "Kafka timestamp → decision computed"),
            ("visible_ms", "Kafka timestamp → decision committed and read"),
        ):
            p = live[key]
            lines.append(
                f"| {title} | {p['p50']:.1f} | {p['p90']:.1f} | {p['p99']:.1f} | "
                f"{p['p99.9']:.1f} | {p['max']:.1f} |"
            )
    (out / "stream_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in results["drain"]:
        curve = np.array(run["curve"]) if run["curve"] else np.zeros((1, 2))
        axes[0].plot(curve[:, 0], curve[:, 1] / 1000, label=run["engine"])
    axes[0].set(xlabel="seconds", ylabel="decisions committed (thousands)",
                title="Draining a backlog")  # fmt: skip
    axes[0].legend()
    for live in results.get("live", []):
        sample = np.sort(np.asarray(live["visible_sample"]))
        label = f"{live['rate_achieved']:,.0f}/s, {live['reasons']} reasons"
        axes[1].plot(sample, np.linspace(0, 1, len(sample)), label=label)
    axes[1].set_xscale("log")
    axes[1].set(xlabel="ms (log)", ylabel="share of decisions",
                title="Kafka timestamp → committed decision, live")  # fmt: skip
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out / "stream_throughput.png", dpi=110)


def main(
    transactions: int = typer.Option(1_000_000, help="Transactions in the drain runs."),
    partitions: int = typer.Option(3, help="Partitions of the data topics."),
    rates: str = typer.Option("2000,5000", help="Replay rates of the live latency runs."),
    live_seconds: float = typer.Option(40, help="Length of each live run."),
    live_warmup_s: float = typer.Option(
        2.0, help="First seconds of each live run not measured (reported apart as a warm-up)."
    ),
    reasons: str = typer.Option("shap,path", help="Reason methods to measure."),
    faust: bool = typer.Option(True, help="Also drain with the faust worker."),
    live_only: bool = typer.Option(
        False, help="Only the live runs; keep the drain results of the last full run."
    ),
    faust_transactions: int = typer.Option(
        0, help="Transactions for the faust drains (0: the same as --transactions)."
    ),
    seed: int = typer.Option(4),
    log_transactions: Annotated[
        Path | None,
        typer.Option(
            help="Use this transactions log instead of the simulated month (its first "
            "--transactions rows in time order)."
        ),
    ] = None,
    log_labels: Annotated[Path | None, typer.Option(help="Labels for --log-transactions.")] = None,
    out: Annotated[Path, typer.Option(help="Results directory.")] = RESULTS,
) -> None:
    methods = [m.strip() for m in reasons.split(",") if m.strip()]
    if (log_transactions is None) != (log_labels is None):
        raise typer.BadParameter("--log-transactions and --log-labels go together")
    with tempfile.TemporaryDirectory(prefix="fraudstream-bench-") as tmp:
        work = Path(tmp)
        if log_transactions is not None and log_labels is not None:
            tx, labels, registry = prepare_log(log_transactions, log_labels, work)
            source = f"log {log_transactions.name}"
        else:
            tx, labels, registry = prepare(transactions, seed)
            source = f"simulated month (seed {seed})"
        tx = tx.slice(0, transactions)
        port, controller = free_ports(2)
        local = Settings().kafka.model_copy(
            update={"local_port": port, "local_controller_port": controller,
                    "local_dir": work / "broker", "local_heap": "-Xms1g -Xmx1g"}
        )  # fmt: skip
        broker = LocalKafka(local)
        broker.up(timeout=180)
        try:
            base = local.model_copy(update={"bootstrap_servers": broker.bootstrap})
            deployment = Deployment(base, registry, partitions, work)
            runs = []
            if live_only:
                previous = json.loads((RESULTS / "stream_throughput.json").read_text())
                runs, methods_done = previous["drain"], True
            else:
                methods_done = False
            for method in [] if methods_done else methods:
                runs.append(drain(deployment, "confluent", method, tx, labels, timeout=3600))
            if faust and not methods_done:
                sub = tx.slice(0, faust_transactions or transactions)
                for method in methods:
                    runs.append(drain(deployment, "faust", method, sub, labels, timeout=3600))
            lives = []
            for rate in (float(r) for r in rates.split(",") if r.strip()):
                rows = tx.slice(0, int(rate * live_seconds))
                lives.append(
                    live_latency(deployment, rows, labels, rate, methods[-1], live_warmup_s)
                )
        finally:
            broker.down()
    write_reports(
        {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "source": source,
            "partitions": partitions,
            "drain": runs,
            "live": lives,
        },
        out,
    )


if __name__ == "__main__":
    typer.run(main)
