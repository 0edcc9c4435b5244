"""The card-number scan at the end of ``fraudstream demo`` (issue 9): after a run that sent raw card
numbers through the API, none may be anywhere the run left data.

Scanned, with the project's scanner (``scoring.card_data``, ``stream.card_scan``; docs/security.md):

* every file under the run directory: the services' logs, the simulated data, the registry, the
  worker checkpoints, ``processes.json`` (``summary.json`` is written after the scan; the demo
  checks its text before writing it);
* when the run started the local broker, the broker's files that belong to this run: its config,
  its own logs, the data directory's files, the partitions of the broker's internal topics (group
  offsets, transaction state, cluster metadata) and the partitions of the run's topics except their
  segment files (``*.log``), all without their offset and time indexes (``_INDEXES``). Other
  deployments' topics in the same directory (``kafka.local_dir`` is shared between runs) are not
  this run's and are left out;
* every record — key, value, headers, aborted transactions included — of every topic of the run's
  prefix, read from the broker.

Why the run's segment files are read through the broker and not as bytes: the worker and the
replay produce lz4-compressed batches, where a card number would be invisible to a byte scan, and
lz4 stores short literals side by side, so unrelated digits (amounts, merchant codes) can meet in
a Luhn-valid run — a finding that would mean nothing. The records read back are exactly what those
segments hold, decompressed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from scoring.card_data import FoundIn, scan_files
from scoring.settings import KafkaSettings


@dataclass(frozen=True)
class RunScan:
    found: list[FoundIn]
    files: int
    records: int
    seconds: float

    def line(self) -> str:
        return (
            f"card numbers found: {len(self.found)} in {self.records:,} records, "
            f"{self.files:,} files ({self.seconds:.1f} s)"
        )


# Kafka's offset and time indexes: fixed-width binary entries (offsets, file positions,
# timestamps), never record bytes; while the broker runs, each is preallocated to 10 MiB of zeros
# (a demo's partitions: ~0.4 GB to read for nothing).
_INDEXES = (".index", ".timeindex")


def broker_paths(home: Path, topic_prefix: str) -> list[Path]:
    """The local broker's files of one run (module docstring): everything under ``home`` but the
    partitions of other deployments' topics, the segment files of the run's own, and indexes."""
    if not topic_prefix:
        raise ValueError("a run's topics are told apart by their prefix; this one has none")
    data = home / "data"
    paths = [p for p in sorted(home.iterdir()) if p != data] if home.is_dir() else []
    if data.is_dir():
        for entry in sorted(data.iterdir()):
            if not entry.is_dir():
                paths.append(entry)
                continue
            mine = entry.name.startswith(topic_prefix)
            if mine or entry.name.startswith("__"):
                paths += sorted(
                    f
                    for f in entry.rglob("*")
                    if f.is_file()
                    and f.suffix not in _INDEXES
                    and not (mine and f.suffix == ".log")
                )
    return paths


def scan_run(
    run_dir: Path, kafka: KafkaSettings, *, broker_home: Path | None = None, topics: bool = True
) -> RunScan:
    """Scan the run directory, the broker's files of the run (``broker_home``: the run started the
    broker) and, with ``topics``, every record of the run's topics (``kafka.topic_prefix``)."""
    began = time.monotonic()
    roots = [run_dir]
    if broker_home is not None:
        roots += broker_paths(broker_home, kafka.topic_prefix)
    found, files = scan_files(*roots)
    records = 0
    if topics:
        from stream.card_scan import scan_topics

        in_topics, records = scan_topics(kafka)
        found += in_topics
    return RunScan(found, files, records, time.monotonic() - began)
