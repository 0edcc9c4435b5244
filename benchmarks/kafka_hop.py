"""One Kafka hop's latency, per client setting: Nagle's algorithm, linger, transactions.

A decision through the API crosses Kafka twice (the API's producer to the worker, the worker's
transactional producer back to the API's reader), so a hop's latency is paid twice per request.
This starts the local broker (KRaft, from its jars) and, for each combination in turn, sends
``--records`` 700-byte records at ``--rate``/s to the 3 ``decisions`` partitions and reads them
with a read_uncommitted consumer (``fetch.wait.max.ms`` 100, as the API's reader):

* ``socket.nagle.disable`` false (librdkafka's default) or true, on producer and consumer;
* producer ``linger.ms`` 0.5 (the worker's) or 5 (the API's);
* an idempotent producer (the API's), or a transactional one committing every 100 ms (the
  worker's).

One run is thrown away first: the freshly started broker's JIT is still warming up (that run's
p99 was ~1 s).

Latency: the record's Kafka timestamp (taken when ``produce()`` is called) to its arrival at the
consumer; the first 100 of each run left out (connection and metadata set-up). The combinations
run in rounds (``--rounds``), interleaved, so a slow spell of the shared machine hits all of them.

Writes results/kafka_hop.{json,md,png}.

    .venv/bin/python benchmarks/kafka_hop.py            # ~5 min
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import typer

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
TOPIC = "decisions"
COMMIT_EVERY_S = 0.1  # the worker's stream.commit_interval_ms


def _hop(bootstrap: str, name: str, nagle_off: bool, linger_ms: float, transactional: bool,
         records: int, rate: float) -> np.ndarray:  # fmt: skip
    from confluent_kafka import Consumer, Producer, TopicPartition

    arrived: list[float] = []
    stop = threading.Event()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"hop-{name}",
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",
            "fetch.wait.max.ms": 100,
            "socket.nagle.disable": nagle_off,
        }
    )
    consumer.assign([TopicPartition(TOPIC, p, -1) for p in range(3)])

    def read() -> None:
        while not stop.is_set():
            message = consumer.poll(0.05)
            if message is not None and message.error() is None:
                arrived.append(time.time() * 1000 - message.timestamp()[1])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(2)  # assigned and fetching
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": linger_ms,
        "socket.nagle.disable": nagle_off,
    }
    if transactional:
        config["transactional.id"] = f"hop-{name}"
    producer = Producer(config)
    if transactional:
        producer.init_transactions()
        producer.begin_transaction()
    opened = time.monotonic()
    for i in range(records):
        producer.produce(TOPIC, b"x" * 700, str(i).encode())
        producer.poll(0)
        if transactional and time.monotonic() - opened >= COMMIT_EVERY_S:
            producer.commit_transaction()
            producer.begin_transaction()
            opened = time.monotonic()
        time.sleep(1 / rate)
    if transactional:
        producer.commit_transaction()
    producer.flush(10)
    time.sleep(1)
    stop.set()
    reader.join()
    consumer.close()
    return np.array(arrived[100:])


def _label(nagle_off: bool, linger_ms: float, transactional: bool) -> str:
    return (
        f"{'transactional' if transactional else 'idempotent'}, linger {linger_ms:g} ms, "
        f"Nagle {'off' if nagle_off else 'on'}"
    )


def write_reports(results: dict[str, Any]) -> None:
    rows = results["combinations"]
    lines = [
        "# One Kafka hop: produce → consume latency per client setting",
        "",
        f"Local broker (Kafka {results['kafka_version']}, KRaft, single node), 2 cores; run of "
        f"{results['when']}. {results['config']['records']} records of 700 bytes at "
        f"{results['config']['rate']:g}/s per run to 3 partitions, a read_uncommitted consumer "
        f"(fetch.wait.max.ms 100); {results['config']['rounds']} interleaved rounds, the first "
        "100 records of each run left out. Latency: the record's Kafka timestamp (its "
        "`produce()` call) to its arrival at the consumer. Command: "
        "`.venv/bin/python benchmarks/kafka_hop.py`.",
        "",
        "| producer | linger ms | Nagle | p50 ms | p90 ms | p99 ms | max ms | records |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        p = r["latency_ms"]
        lines.append(
            f"| {'transactional' if r['transactional'] else 'idempotent'} | {r['linger_ms']:g} | "
            f"{'off' if r['nagle_off'] else 'on'} | {p['p50']:.2f} | {p['p90']:.2f} | "
            f"{p['p99']:.2f} | {p['max']:.1f} | {r['records_timed']:,} |"
        )
    (RESULTS / "kafka_hop.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    labels = [_label(r["nagle_off"], r["linger_ms"], r["transactional"]) for r in rows]
    y = np.arange(len(rows))
    for key, marker in (("p50", "o"), ("p90", "s"), ("p99", "^")):
        ax.scatter([r["latency_ms"][key] for r in rows], y, marker=marker, label=key)
    ax.set_yticks(y, labels)
    ax.set_xlabel("produce → consume, ms")
    ax.set_title("One Kafka hop on the local broker")
    ax.grid(axis="x", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "kafka_hop.png", dpi=120)


def main(
    records: int = typer.Option(600, help="Records per run (the first 100 not counted)."),
    rate: float = typer.Option(200.0, help="Records per second."),
    rounds: int = typer.Option(2, help="Rounds over all combinations, interleaved."),
) -> None:
    """Produce → consume latency for Nagle on/off, linger 0.5/5 ms, idempotent/transactional."""
    from stream_throughput import started_broker

    broker, local, _work = started_broker("kafka-hop-")
    combinations = list(itertools.product((False, True), (0.5, 5.0), (False, True)))
    samples: dict[tuple[bool, float, bool], list[np.ndarray]] = {c: [] for c in combinations}
    try:
        time.sleep(15)  # the broker's start-up work settles
        # A run thrown away: the broker's JIT warms up on it (its first run's p99 was ~1 s).
        _hop(broker.bootstrap, "warm-up", False, 0.5, True, records, rate)
        for round_ in range(rounds):
            for nagle_off, linger, transactional in combinations:
                name = f"{round_}-{int(nagle_off)}-{linger:g}-{int(transactional)}"
                got = _hop(broker.bootstrap, name, nagle_off, linger, transactional, records, rate)
                samples[nagle_off, linger, transactional].append(got)
                print(
                    f"round {round_ + 1}/{rounds} {_label(nagle_off, linger, transactional)}: "
                    f"p50 {np.percentile(got, 50):.2f} p99 {np.percentile(got, 99):.2f} ms",
                    flush=True,
                )
    finally:
        broker.down()
    rows = []
    for (nagle_off, linger, transactional), parts in samples.items():
        measured = np.concatenate(parts)
        rows.append(
            {
                "nagle_off": nagle_off,
                "linger_ms": linger,
                "transactional": transactional,
                "records_timed": int(measured.size),
                "latency_ms": {
                    q: float(np.percentile(measured, p))
                    for q, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
                },
            }
        )
    results = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "kafka_version": local.local_version,
        "config": {"records": records, "rate": rate, "rounds": rounds},
        "combinations": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "kafka_hop.json").write_text(json.dumps(results, indent=2))
    write_reports(results)
    print(f"wrote {RESULTS / 'kafka_hop.md'}")


if __name__ == "__main__":
    typer.run(main)
