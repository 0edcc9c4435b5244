"""State checkpoints: the feature state and label index with the input offsets they reflect.

State is a deterministic function of the input, so a checkpoint plus a re-read of the input after
it gives exactly the state an uninterrupted worker has. That is why the worker needs no changelog
of every update: it writes a checkpoint now and then (after a committed Kafka transaction), and on
start or takeover restores the newest one that is not ahead of the group's committed offsets.

One file per checkpoint (numpy ``.npz``: the engine snapshot, the label index as Arrow IPC, and a
JSON header), written to a temporary name, fsynced and renamed, so a crash never leaves half a
checkpoint behind. The newest ``keep`` are kept.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from stream.merge import SourceId

FORMAT = 1
log = logging.getLogger("fraudstream.worker")
# What reading a truncated, emptied or corrupted checkpoint raises.
_DAMAGED = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, pa.ArrowInvalid)


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    positions: dict[SourceId, int]
    created_at: float
    engine: bytes
    label_index: pa.Table


def _ipc(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


class CheckpointStore:
    def __init__(self, directory: Path, *, keep: int = 3, identity: dict[str, object]) -> None:
        """``identity`` (topic names, feature schema) must match for a checkpoint to be used."""
        self.directory = directory
        self.keep = keep
        self.identity = identity
        directory.mkdir(parents=True, exist_ok=True)

    def paths(self) -> list[Path]:
        """Newest first."""
        return sorted(self.directory.glob("checkpoint-*.npz"), reverse=True)

    def save(self, positions: dict[SourceId, int], engine: bytes, label_index: pa.Table) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)  # an operator may have wiped it
        paths = self.paths()
        sequence = int(paths[0].stem.split("-")[1]) + 1 if paths else 1
        header = {
            "format": FORMAT,
            "identity": self.identity,
            "created_at": time.time(),
            "positions": [[s.kind, s.partition, offset] for s, offset in positions.items()],
        }
        path = self.directory / f"checkpoint-{sequence:012d}.npz"
        temporary = path.with_suffix(".tmp")
        with open(temporary, "wb") as handle:
            np.savez(
                handle,
                header=np.frombuffer(json.dumps(header).encode(), np.uint8),
                engine=np.frombuffer(engine, np.uint8),
                label_index=np.frombuffer(_ipc(label_index), np.uint8),
            )
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        for old in self.paths()[self.keep :]:
            old.unlink(missing_ok=True)
        return path

    def _header(self, path: Path) -> dict[str, object] | None:
        try:
            with np.load(path, allow_pickle=False) as arrays:
                header: dict[str, object] = json.loads(arrays["header"].tobytes())
        except _DAMAGED:
            return None  # unreadable: skip it, an older one (or a rebuild) will do
        if header.get("format") != FORMAT or header.get("identity") != self.identity:
            return None
        return header

    def newest(self, acceptable: Callable[[dict[SourceId, int]], bool]) -> Checkpoint | None:
        """The newest readable checkpoint of this identity whose positions ``acceptable``."""
        for path in self.paths():
            header = self._header(path)
            if header is None:
                continue
            raw = header["positions"]
            assert isinstance(raw, list)
            positions = {SourceId(kind, int(p)): int(offset) for kind, p, offset in raw}
            if not acceptable(positions):
                continue
            try:
                with np.load(path, allow_pickle=False) as arrays:
                    engine = arrays["engine"].tobytes()
                    index = pa.ipc.open_stream(arrays["label_index"].tobytes()).read_all()
            except _DAMAGED as exc:  # e.g. a disk that lost the file's tail: use an older one
                log.warning("checkpoint %s is damaged (%s); trying an older one", path.name, exc)
                continue
            created = header["created_at"]
            assert isinstance(created, float)
            return Checkpoint(path, positions, created, engine, index)
        return None


class BackgroundWriter:
    """Writes checkpoints on a thread of its own, one at a time, so the loop does not stop for
    the engine's serialisation, the label index's table, the ``.npz`` and the fsyncs (~300 ms at
    100k remembered transactions, measured in benchmarks/api_load.py: a deadline miss for every
    transaction in flight). The loop hands over copies taken between batches (the engine's
    :meth:`~scoring.features.engine.FeatureEngine.capture`, the index's entries), so the
    checkpoint is the state at ``positions`` however far the loop has moved on meanwhile."""

    def __init__(self, store: CheckpointStore, on_saved: Callable[[Path], None]) -> None:
        self.store = store
        self.on_saved = on_saved
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(
        self,
        positions: dict[SourceId, int],
        engine: Callable[[], bytes],
        label_index: Callable[[], pa.Table],
    ) -> bool:
        """Start writing; False (nothing done) while the previous checkpoint is being written."""
        if self.busy:
            return False
        self._thread = threading.Thread(
            target=self._write,
            args=(positions, engine, label_index),
            name="checkpoint-writer",
            daemon=True,
        )
        self._thread.start()
        return True

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _write(
        self,
        positions: dict[SourceId, int],
        engine: Callable[[], bytes],
        label_index: Callable[[], pa.Table],
    ) -> None:
        try:
            path = self.store.save(positions, engine(), label_index())
        except Exception:  # a full or read-only disk: the next interval tries again
            log.exception("writing a checkpoint failed; the previous ones stay usable")
            return
        self.on_saved(path)
