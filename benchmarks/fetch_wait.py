"""What a consumer's ``fetch.wait.max.ms`` costs the broker, and what it does to latency.

The worker, the API's decisions reader and the trainer all long-poll the broker
(``kafka.fetch_wait_max_ms``). This starts the local broker (KRaft, from its jars), creates the
project's topics, and for each wait in turn:

* two idle consumers (one read_committed, one read_uncommitted) assigned to ``transactions``,
  ``labels`` and ``decisions`` (9 partitions): the broker's CPU over ``--idle-s`` seconds;
* then an idempotent producer (acks=all, linger.ms 1, like the API's) sends ``--records`` records
  at ``--rate``/s: produce → consume latency (the record's Kafka timestamp to its arrival at the
  consumer), the first 100 left out (metadata and connection set-up).

Writes results/fetch_wait.{json,md,png}.

    .venv/bin/python benchmarks/fetch_wait.py            # ~3 min
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import typer

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
TOPICS = ("transactions", "labels", "decisions")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(bootstrap: str, broker_pid: int, wait_ms: int, cfg: dict[str, Any]) -> dict[str, Any]:
    from confluent_kafka import Consumer, Producer, TopicPartition

    consumers = []
    for isolation in ("read_committed", "read_uncommitted"):
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"fetch-wait-{wait_ms}-{isolation}",
                "enable.auto.commit": False,
                "isolation.level": isolation,
                "fetch.wait.max.ms": wait_ms,
            }
        )
        consumer.assign([TopicPartition(t, p, -1) for t in TOPICS for p in range(3)])
        consumers.append(consumer)
    stop = threading.Event()
    latencies: list[float] = []

    def read(consumer: Any, timed: bool) -> None:
        while not stop.is_set():
            message = consumer.poll(0.05)
            if timed and message is not None and message.error() is None:
                latencies.append(time.time() * 1000 - message.timestamp()[1])

    threads = [
        threading.Thread(target=read, args=(c, i == 0), daemon=True)
        for i, c in enumerate(consumers)
    ]
    for thread in threads:
        thread.start()
    time.sleep(3)
    cpu, began = _cpu_seconds(broker_pid), time.monotonic()
    time.sleep(cfg["idle_s"])
    idle_cores = (_cpu_seconds(broker_pid) - cpu) / (time.monotonic() - began)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 1, "acks": "all", "enable.idempotence": True}
    )
    latencies.clear()
    for i in range(cfg["records"]):
        producer.produce("transactions", b"x" * 300, str(i).encode())
        producer.poll(0)
        time.sleep(1 / cfg["rate"])
    producer.flush(10)
    time.sleep(1)
    stop.set()
    for thread in threads:
        thread.join()
    for consumer in consumers:
        consumer.close()
    measured = np.array(latencies[100:])
    result = {
        "fetch_wait_max_ms": wait_ms,
        "idle_broker_cores": idle_cores,
        "records_timed": int(measured.size),
        "latency_ms": {
            q: float(np.percentile(measured, p)) if measured.size else None
            for q, p in (("p50", 50), ("p99", 99), ("max", 100))
        },
    }
    lat = result["latency_ms"]
    print(
        f"fetch.wait.max.ms={wait_ms}: idle broker {idle_cores:.3f} cores; produce->consume "
        f"p50 {lat['p50']:.1f} p99 {lat['p99']:.1f} max {lat['max']:.1f} ms",
        flush=True,
    )
    return result


def write_reports(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["runs"]
    lines = [
        "# Consumer fetch wait: broker CPU and latency",
        "",
        f"Local broker (Kafka {results['kafka_version']}, KRaft, 3 partitions per topic), two idle "
        f"consumers over 9 partitions, then {results['config']['records']} records at "
        f"{results['config']['rate']:g}/s (first 100 not timed). Run of {results['when']}.",
        "",
        "| fetch.wait.max.ms | broker CPU, idle consumers (cores) | produce → consume p50 ms "
        "| p99 ms | max ms |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lat = r["latency_ms"]
        lines.append(
            f"| {r['fetch_wait_max_ms']} | {r['idle_broker_cores']:.3f} | {lat['p50']:.1f} | "
            f"{lat['p99']:.1f} | {lat['max']:.1f} |"
        )
    lines.append(f"\nBroker alone, no clients: {results['no_clients_cores']:.3f} cores.")
    (RESULTS / "fetch_wait.md").write_text("\n".join(lines) + "\n")
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    waits = [str(r["fetch_wait_max_ms"]) for r in rows]
    a.bar(waits, [r["idle_broker_cores"] for r in rows])
    a.set(xlabel="fetch.wait.max.ms", ylabel="broker cores", title="Idle consumers")
    b.bar(waits, [r["latency_ms"]["p99"] for r in rows], label="p99")
    b.bar(waits, [r["latency_ms"]["p50"] for r in rows], label="p50")
    b.set(xlabel="fetch.wait.max.ms", ylabel="ms", title="Produce → consume")
    b.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "fetch_wait.png", dpi=110)


def main(
    waits: str = typer.Option("10,100,500", help="fetch.wait.max.ms values, in run order."),
    idle_s: float = typer.Option(15.0, help="Seconds of idle broker CPU per wait."),
    records: int = typer.Option(500, help="Records timed per wait (the first 100 not counted)."),
    rate: float = typer.Option(50.0, help="Records per second."),
) -> None:
    """Broker CPU with idle consumers, and produce → consume latency, per fetch wait."""
    from stream_throughput import started_broker

    broker, local, work = started_broker("fetch-wait-")
    cfg = {"idle_s": idle_s, "records": records, "rate": rate}
    try:
        pid = int((work / "broker" / "kafka.pid").read_text().strip())
        time.sleep(20)  # the broker's start-up work settles
        cpu, began = _cpu_seconds(pid), time.monotonic()
        time.sleep(idle_s)
        alone = (_cpu_seconds(pid) - cpu) / (time.monotonic() - began)
        print(f"broker alone: {alone:.3f} cores", flush=True)
        runs = [_measure(broker.bootstrap, pid, int(w), cfg) for w in waits.split(",")]
    finally:
        broker.down()
    results = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "kafka_version": local.local_version,
        "config": cfg,
        "no_clients_cores": alone,
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fetch_wait.json").write_text(json.dumps(results, indent=2))
    write_reports(results)
    print(f"wrote {RESULTS / 'fetch_wait.md'}")


if __name__ == "__main__":
    typer.run(main)
