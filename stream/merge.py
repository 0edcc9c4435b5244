"""Every partition of ``transactions`` and ``labels`` merged into one event-time order.

A worker keeps the whole feature state (docs/stream.md), so it reads every partition. The feature
engine needs events bucket by bucket (``ENTITY_BUCKET_MS``): all events of a second before any event
of the next, because a merchant's transactions arrive on every partition. Within a bucket the order
does not matter (pending entity sums are exact, labels take effect at the bucket's end), so
transactions of the open bucket are scored as soon as they arrive; that keeps latency low.

The merge is deterministic: what it hands out, and when a partition's events are released, depends
only on the partitions' contents, except for one rule that needs the wall clock: a partition that is
caught up and has delivered nothing for ``idle_ms`` (``label_idle_ms`` for labels partitions) stops
holding the watermark back. An event that reaches the merge after its bucket was released is *late*;
it is applied at once and counted.

No Kafka here: the worker feeds decoded chunks in and takes ready steps out (unit-testable).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from scoring.features.catalog import ENTITY_BUCKET_MS

TRANSACTIONS = "transactions"
LABELS = "labels"
NEVER = -(2**62)  # a bucket before every real one
ALWAYS = 2**62  # the frontier of an idle partition
RESUME_AFTER_S = 1.0  # a pause of every partition at least this long restarts the idle clocks


@dataclass(frozen=True)
class SourceId:
    kind: str  # TRANSACTIONS | LABELS
    partition: int


@dataclass(frozen=True)
class RejectedMessage:
    source: SourceId
    offset: int
    key: bytes | None
    value: bytes
    reason: str


@dataclass
class Chunk:
    """Consecutive messages of one partition, decoded. ``rows[i]`` is message i's row in
    ``table`` (-1: rejected); ``buckets`` never decrease."""

    offsets: np.ndarray
    buckets: np.ndarray
    rows: np.ndarray
    arrived_ms: np.ndarray
    table: pa.Table
    rejected: dict[int, RejectedMessage]  # by offset

    def __len__(self) -> int:
        return len(self.offsets)

    def split(self, k: int) -> tuple[Chunk, Chunk]:
        """The first ``k`` messages and the rest."""
        valid = int(np.count_nonzero(self.rows[:k] >= 0))
        head_offsets = self.offsets[:k]
        head_rejected = {o: r for o, r in self.rejected.items() if o <= head_offsets[-1]}
        head = Chunk(
            head_offsets,
            self.buckets[:k],
            self.rows[:k],
            self.arrived_ms[:k],
            self.table.slice(0, valid),
            head_rejected,
        )
        tail_rows = self.rows[k:].copy()
        tail_rows[tail_rows >= 0] -= valid
        tail = Chunk(
            self.offsets[k:],
            self.buckets[k:],
            tail_rows,
            self.arrived_ms[k:],
            self.table.slice(valid),
            {o: r for o, r in self.rejected.items() if o not in head_rejected},
        )
        return head, tail


@dataclass
class Source:
    """One partition's buffered messages and progress."""

    id: SourceId
    processed_next: int  # offset of the first message not yet applied to the state
    received_next: int = -1  # offset after the last message received (-1: none yet)
    frontier: int = NEVER  # highest bucket received
    high: int = -1  # the partition's end offset as last seen by the consumer (-1: unknown)
    last_arrival: float = field(default_factory=time.monotonic)
    chunks: deque[Chunk] = field(default_factory=deque)

    def caught_up(self) -> bool:
        fetched = self.received_next if self.received_next >= 0 else self.processed_next
        return self.high >= 0 and fetched >= self.high

    def idle(self, now: float, idle_s: float) -> bool:
        return self.caught_up() and now - self.last_arrival >= idle_s


@dataclass
class Step:
    """Events released together: apply them to the state in one engine call."""

    transactions: pa.Table | None  # None: no transaction released
    partitions: np.ndarray  # per transaction row
    offsets: np.ndarray  # per transaction row
    arrived_ms: np.ndarray  # per transaction row (Kafka timestamp)
    labels: pa.Table | None  # decoded label messages (LABEL_SCHEMA)
    rejected: list[RejectedMessage]
    advanced: dict[SourceId, int]  # new processed_next of each source that moved

    @property
    def empty(self) -> bool:
        return not self.advanced


class EventTimeMerge:
    def __init__(
        self,
        idle_ms: float,
        bucket_ms: int = ENTITY_BUCKET_MS,
        *,
        label_idle_ms: float | None = None,
    ) -> None:
        self.idle_s = idle_ms / 1000.0
        self.label_idle_s = self.idle_s if label_idle_ms is None else label_idle_ms / 1000.0
        self.bucket_ms = bucket_ms
        self.sources: dict[SourceId, Source] = {}
        self.released_bucket = NEVER  # highest bucket whose events were released
        self.closed_bucket = NEVER  # highest bucket of a released label
        self.late = 0

    def add_source(self, source_id: SourceId, next_offset: int) -> None:
        self.sources[source_id] = Source(source_id, processed_next=next_offset)

    def reset(self, positions: dict[SourceId, int]) -> None:
        """Forget buffered messages; continue from ``positions`` (after a state restore)."""
        for source_id in list(self.sources):
            self.add_source(source_id, positions.get(source_id, 0))
        self.released_bucket = NEVER
        self.closed_bucket = NEVER

    def positions(self) -> dict[SourceId, int]:
        return {sid: s.processed_next for sid, s in self.sources.items()}

    def add(
        self,
        source_id: SourceId,
        offsets: np.ndarray,
        event_ms: np.ndarray,
        rows: np.ndarray,
        arrived_ms: np.ndarray,
        table: pa.Table,
        rejected: list[RejectedMessage],
        now: float | None = None,
    ) -> None:
        """Messages of one partition in offset order. ``event_ms`` is each valid message's event
        time (a label's effective time); rejected messages (``rows`` -1) keep the bucket of the
        message before them, so they are released, and dead-lettered, in their place."""
        source = self.sources[source_id]
        now = time.monotonic() if now is None else now
        sources = self.sources.values()
        paused = now - max(s.last_arrival for s in sources) >= RESUME_AFTER_S
        if paused and all(self._idle(s, now) for s in sources):
            # Traffic resumes after every partition paused (a replay into an idle worker, a
            # broker restart): the others' first messages may be a few ms behind this one, so
            # restart every idle clock; each partition holds the watermark again until it
            # delivers or stays quiet for its grace. Without this, the first partition to
            # deliver releases its seconds alone and the others' events of those seconds are
            # late (seen as changed features in tests/chaos). Only after a real pause of the
            # whole stream: live traffic a few transactions a second apart (a quiet bank's API
            # traffic) would otherwise wait the whole idle grace on every transaction.
            for other in self.sources.values():
                other.last_arrival = now
        own = np.where(rows >= 0, event_ms // self.bucket_ms, NEVER)
        # Late: a later second's events were applied already, or (transactions) the second's
        # labels were, which take effect at its end.
        late = own < self.released_bucket
        if source_id.kind == TRANSACTIONS:
            late |= own <= self.closed_bucket
        self.late += int(np.count_nonzero((rows >= 0) & late))
        buckets = np.maximum.accumulate(np.maximum(own, source.frontier))
        source.frontier = int(buckets[-1])
        source.received_next = int(offsets[-1]) + 1
        source.last_arrival = now
        source.chunks.append(
            Chunk(offsets, buckets, rows, arrived_ms, table, {r.offset: r for r in rejected})
        )

    def watermark(self, now: float | None = None) -> int:
        """Every source has delivered all its events of buckets below this one."""
        now = time.monotonic() if now is None else now
        return min(
            (ALWAYS if self._idle(s, now) else s.frontier for s in self.sources.values()),
            default=NEVER,
        )

    def _idle(self, source: Source, now: float) -> bool:
        return source.idle(
            now, self.idle_s if source.id.kind == TRANSACTIONS else self.label_idle_s
        )

    def take_ready(self, now: float | None = None) -> Step:
        """Release what the watermark allows: events of closed buckets, and transactions of the
        open one (their features only need closed buckets). Labels wait for their bucket to
        close, since they take effect at its end."""
        mark = self.watermark(now)
        tx_parts: list[Chunk] = []
        tx_partition: list[np.ndarray] = []
        label_parts: list[pa.Table] = []
        rejected: list[RejectedMessage] = []
        advanced: dict[SourceId, int] = {}
        for sid, source in self.sources.items():
            limit = mark if sid.kind == TRANSACTIONS else mark - 1
            for chunk in self._pop(source, limit):
                if sid.kind == TRANSACTIONS:
                    tx_parts.append(chunk)
                    tx_partition.append(np.full(chunk.table.num_rows, sid.partition, np.int64))
                else:
                    label_parts.append(chunk.table)
                rejected.extend(chunk.rejected.values())
                advanced[sid] = int(chunk.offsets[-1]) + 1
                source.processed_next = advanced[sid]
                if chunk.table.num_rows:
                    top = int(chunk.buckets[chunk.rows >= 0].max())
                    self.released_bucket = max(self.released_bucket, top)
                    if sid.kind == LABELS:
                        self.closed_bucket = max(self.closed_bucket, top)
        valid = [np.flatnonzero(c.rows >= 0) for c in tx_parts]
        return Step(
            transactions=_concat([c.table for c in tx_parts]),
            partitions=_cat(tx_partition),
            offsets=_cat([c.offsets[v] for c, v in zip(tx_parts, valid, strict=True)]),
            arrived_ms=_cat([c.arrived_ms[v] for c, v in zip(tx_parts, valid, strict=True)]),
            labels=_concat(label_parts),
            rejected=rejected,
            advanced=advanced,
        )

    @staticmethod
    def _pop(source: Source, limit: int) -> list[Chunk]:
        out: list[Chunk] = []
        while source.chunks:
            chunk = source.chunks[0]
            if chunk.buckets[-1] <= limit:
                out.append(source.chunks.popleft())
                continue
            k = int(np.searchsorted(chunk.buckets, limit, side="right"))
            if k:
                head, tail = chunk.split(k)
                out.append(head)
                source.chunks[0] = tail
            break
        return out

    def buffered(self) -> int:
        return sum(len(c) for s in self.sources.values() for c in s.chunks)

    def to_hold_back(self, limit: int, now: float | None = None) -> set[SourceId]:
        """Sources whose reading should pause: more than ``limit`` messages buffered, all of them
        waiting for another partition to reach their second. A partition that holds the watermark
        back (frontier at or below it) is never paused, so the merge can always move on: pausing
        the others only stops them from piling up messages it cannot release yet."""
        mark = self.watermark(now)
        return {
            sid
            for sid, source in self.sources.items()
            if source.frontier > mark and sum(len(c) for c in source.chunks) > limit
        }


def _cat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.empty(0, np.int64)


def _concat(tables: list[pa.Table]) -> pa.Table | None:
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return None
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]
