"""EventTimeMerge: the watermark, what each step releases, rejected messages in place, lateness.

No Kafka: chunks are built the way the worker builds them (``scoring.wire`` decoders, ``rows`` -1
for rejected messages) and fed in directly; the wall clock is passed as ``now`` and idleness is
arranged by setting ``Source.high`` and ``Source.last_arrival``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scoring.wire import decode_labels, decode_transactions
from stream.merge import (
    ALWAYS,
    LABELS,
    NEVER,
    RESUME_AFTER_S,
    TRANSACTIONS,
    Chunk,
    EventTimeMerge,
    RejectedMessage,
    SourceId,
    Step,
)

B = 1_000  # bucket (ms)
IDLE_MS = 1_000.0
T0 = 1_700_000_000_000  # a real epoch (ms) on a bucket boundary
T0_BUCKET = T0 // B

TX0, TX1 = SourceId(TRANSACTIONS, 0), SourceId(TRANSACTIONS, 1)
LB0 = SourceId(LABELS, 0)

Message = tuple[int, int | None]  # (offset, event ms) - None: a message the decoder rejects


def _tx_value(name: str, event_ms: int | None) -> bytes:
    if event_ms is None:
        return b'{"transaction_id": "' + name.encode() + b'", "amount": -1}'  # invalid
    document = {"transaction_id": name, "card_id": "card", "timestamp": event_ms, "amount": 1.5}
    return orjson.dumps(document)


def _label_value(name: str, event_ms: int | None) -> bytes:
    if event_ms is None:
        return b"not json"
    return orjson.dumps({"transaction_id": name, "is_fraud": True, "reported_at": event_ms})


def name_of(sid: SourceId, offset: int) -> str:
    return f"{sid.kind[0]}{sid.partition}-{offset}"


def feed(
    merge: EventTimeMerge, sid: SourceId, messages: Sequence[Message], now: float | None = None
) -> None:
    """Decode ``messages`` as the worker does and add them as one chunk."""
    offsets = np.array([o for o, _ in messages], np.int64)
    if sid.kind == TRANSACTIONS:
        values = [_tx_value(name_of(sid, o), e) for o, e in messages]
        table, positions, rejected = decode_transactions(values)
        column = "timestamp"
    else:
        values = [_label_value(name_of(sid, o), e) for o, e in messages]
        table, positions, rejected = decode_labels(values)
        column = "reported_at"
    rows = np.full(len(messages), -1, np.int64)
    rows[positions] = np.arange(len(positions))
    event_ms = np.zeros(len(messages), np.int64)
    event_ms[positions] = table.column(column).cast(pa.int64()).to_numpy()
    dead = [
        RejectedMessage(sid, int(offsets[r.index]), None, values[r.index], r.reason)
        for r in rejected
    ]
    merge.add(sid, offsets, event_ms, rows, offsets * 10, table, dead, now=now)


def ids(table: pa.Table | None) -> list[str]:
    return [] if table is None else table.column("transaction_id").to_pylist()


def make(*sources: SourceId, start: int = 0) -> EventTimeMerge:
    merge = EventTimeMerge(IDLE_MS, bucket_ms=B)
    for sid in sources:
        merge.add_source(sid, start)
    return merge


def make_idle(merge: EventTimeMerge, sid: SourceId, now: float) -> None:
    source = merge.sources[sid]
    source.high = source.received_next if source.received_next >= 0 else source.processed_next
    source.last_arrival = now - 2 * IDLE_MS / 1000


NOW = 10_000.0


# ------------------------------------------------------------------------------- watermark


def test_watermark_is_the_lowest_frontier() -> None:
    merge = make(TX0, TX1, LB0)
    assert merge.watermark(NOW) == NEVER  # nothing received anywhere
    assert make().watermark(NOW) == NEVER  # no sources at all
    feed(merge, TX0, [(0, T0 + 5 * B), (1, T0 + 6 * B + 1)])
    feed(merge, TX1, [(0, T0 + 3 * B + 999)])
    assert merge.watermark(NOW) == NEVER  # the label partition has said nothing yet
    feed(merge, LB0, [(0, T0 + 4 * B)])
    assert merge.watermark(NOW) == T0_BUCKET + 3
    feed(merge, TX1, [(1, T0 + 9 * B)])
    assert merge.watermark(NOW) == T0_BUCKET + 4
    # A frontier is the highest bucket received: an older event does not move it back.
    feed(merge, LB0, [(1, T0 + 8 * B), (2, T0 + 2 * B)])
    assert merge.sources[LB0].frontier == T0_BUCKET + 8
    assert merge.watermark(NOW) == T0_BUCKET + 6


def test_an_idle_source_does_not_hold_the_watermark_back() -> None:
    merge = make(TX0, TX1)
    feed(merge, TX0, [(0, T0 + 7 * B)])
    feed(merge, TX1, [(0, T0 + 2 * B), (1, T0 + 3 * B)])
    tx1 = merge.sources[TX1]
    assert tx1.received_next == 2

    tx1.last_arrival = NOW - 1.0  # quiet for exactly idle_ms ...
    tx1.high = -1  # ... but its end offset is unknown: not idle
    assert merge.watermark(NOW) == T0_BUCKET + 3
    tx1.high = 3  # one message not fetched yet: not caught up
    assert merge.watermark(NOW) == T0_BUCKET + 3
    tx1.high = 2  # caught up and quiet for idle_ms: idle
    assert merge.watermark(NOW) == T0_BUCKET + 7
    tx1.last_arrival = NOW - 0.999  # caught up but delivered something recently: not idle
    assert merge.watermark(NOW) == T0_BUCKET + 3
    tx1.last_arrival = NOW - 1.0
    make_idle(merge, TX0, NOW)
    assert merge.watermark(NOW) == ALWAYS  # every source idle


def test_a_partition_that_is_empty_from_the_start_is_idle_once_its_end_is_known() -> None:
    merge = make(TX0, TX1, start=5)
    feed(merge, TX0, [(5, T0)])
    tx1 = merge.sources[TX1]
    tx1.last_arrival = NOW - 5.0
    assert merge.watermark(NOW) == NEVER
    tx1.high = 5  # nothing after offset 5: received nothing, yet caught up
    assert merge.watermark(NOW) == T0_BUCKET


def test_an_idle_source_that_delivers_again_holds_the_watermark_again() -> None:
    merge = make(TX0, TX1)
    feed(merge, TX0, [(0, T0 + 5 * B)])
    feed(merge, TX1, [(0, T0 + 1 * B)])
    make_idle(merge, TX1, NOW)
    assert merge.watermark(NOW) == T0_BUCKET + 5
    feed(merge, TX1, [(1, T0 + 2 * B)])
    merge.sources[TX1].last_arrival = NOW  # caught up, but it just delivered: not idle
    assert merge.watermark(NOW) == T0_BUCKET + 2


def test_traffic_after_a_pause_of_every_partition_restarts_their_idle_clocks() -> None:
    # a replay started into an idle worker, or the broker back after a restart
    now = time.monotonic()
    merge = make(TX0, TX1)
    make_idle(merge, TX0, now)
    make_idle(merge, TX1, now)
    # the first partition to deliver its backlog again ...
    feed(merge, TX0, [(0, T0 + 5 * B), (1, T0 + 5 * B)])
    assert merge.watermark() == NEVER  # ... does not release its seconds alone
    assert merge.take_ready().empty
    feed(merge, TX1, [(0, T0 + 4 * B)])  # an earlier second, a moment later elsewhere
    assert ids(merge.take_ready().transactions) == ["t1-0"]
    assert merge.late == 0
    make_idle(merge, TX1, time.monotonic())  # quiet for its grace: idle again
    assert ids(merge.take_ready().transactions) == ["t0-0", "t0-1"]


@pytest.mark.parametrize(("quiet_s", "released"), [(0.3, True), (RESUME_AFTER_S + 0.1, False)])
def test_only_a_real_pause_restarts_the_idle_clocks(quiet_s: float, released: bool) -> None:
    # A transaction 0.3 s after the last message anywhere (API traffic of a quiet bank): every
    # partition is idle, but the stream did not pause; holding it for the idle grace would miss
    # the bank's deadline. After a real pause (a replay start, a broker restart) the clocks
    # restart, as above.
    merge = EventTimeMerge(20.0, bucket_ms=B)  # a 20 ms grace, well under RESUME_AFTER_S
    for sid in (TX0, TX1):
        merge.add_source(sid, 0)
        merge.sources[sid].high = 0  # caught up (nothing delivered yet)
        merge.sources[sid].last_arrival = NOW - quiet_s
    feed(merge, TX0, [(0, T0 + 2 * B)], now=NOW)
    step = merge.take_ready(NOW)
    assert step.empty is not released
    if released:
        assert ids(step.transactions) == ["t0-0"]


def test_a_single_idle_partition_delivering_again_restarts_no_other_clock() -> None:
    now = time.monotonic()
    merge = make(TX0, TX1)
    feed(merge, TX0, [(0, T0 + 1 * B)])  # TX0 busy (end offset unknown: not idle)
    make_idle(merge, TX1, now)
    feed(merge, TX1, [(0, T0 + 2 * B)])
    assert merge.sources[TX0].last_arrival < merge.sources[TX1].last_arrival


# --------------------------------------------------------------------------- what is released


def test_open_bucket_transactions_are_released_labels_wait_for_their_bucket_to_close() -> None:
    merge = make(TX0, LB0)
    feed(merge, TX0, [(0, T0 + 5 * B), (1, T0 + 5 * B + 999), (2, T0 + 6 * B)])
    feed(merge, LB0, [(0, T0 + 5 * B + 10), (1, T0 + 5 * B + 20)])
    assert merge.watermark(NOW) == T0_BUCKET + 5

    step = merge.take_ready(NOW)
    assert ids(step.transactions) == ["t0-0", "t0-1"]  # the open bucket: released
    assert step.labels is None  # bucket 5 is still open: labels wait
    assert step.advanced == {TX0: 2}
    assert merge.positions() == {TX0: 2, LB0: 0}
    assert merge.released_bucket == T0_BUCKET + 5
    assert merge.take_ready(NOW).empty  # nothing more until a frontier moves

    feed(merge, LB0, [(2, T0 + 7 * B)])
    step = merge.take_ready(NOW)  # watermark 6: bucket 5 closed
    assert ids(step.transactions) == ["t0-2"]
    assert ids(step.labels) == ["l0-0", "l0-1"]
    assert step.advanced == {TX0: 3, LB0: 2}
    assert merge.buffered() == 1  # the label of bucket 7

    make_idle(merge, TX0, NOW)
    make_idle(merge, LB0, NOW)
    step = merge.take_ready(NOW)
    assert ids(step.labels) == ["l0-2"]
    assert step.transactions is None and step.advanced == {LB0: 3}
    assert merge.buffered() == 0


def test_events_of_later_buckets_wait_for_the_slowest_partition() -> None:
    merge = make(TX0, TX1)
    feed(merge, TX0, [(0, T0), (1, T0 + B), (2, T0 + 2 * B), (3, T0 + 3 * B)])
    feed(merge, TX1, [(0, T0 + 999)])
    step = merge.take_ready(NOW)
    assert ids(step.transactions) == ["t0-0", "t1-0"]
    assert step.advanced == {TX0: 1, TX1: 1}
    feed(merge, TX1, [(1, T0 + 2 * B + 500)])
    step = merge.take_ready(NOW)
    assert sorted(ids(step.transactions)) == ["t0-1", "t0-2", "t1-1"]
    assert step.advanced == {TX0: 3, TX1: 2}
    assert merge.sources[TX0].processed_next == 3


def test_step_columns_follow_the_transaction_rows() -> None:
    merge = make(TX0, TX1, start=100)
    feed(merge, TX0, [(100, T0), (101, None), (102, T0 + 1), (105, T0 + 2)])  # 103-104: gap
    feed(merge, TX1, [(100, None), (101, T0 + 3), (102, T0 + B)])
    step = merge.take_ready(NOW)
    table = step.transactions
    assert table is not None and table.num_rows == 4
    where = zip(step.partitions.tolist(), step.offsets.tolist(), strict=True)
    expected = [name_of(SourceId(TRANSACTIONS, p), o) for p, o in where]
    assert ids(table) == expected
    assert sorted(expected) == ["t0-100", "t0-102", "t0-105", "t1-101"]
    np.testing.assert_array_equal(step.arrived_ms, step.offsets * 10)
    assert step.advanced == {TX0: 106, TX1: 102}
    assert sorted((r.source.partition, r.offset) for r in step.rejected) == [(0, 101), (1, 100)]


# ----------------------------------------------------------------------------- rejected messages


def test_a_rejected_message_is_released_in_place_with_the_bucket_before_it() -> None:
    merge = make(TX0, TX1)
    feed(merge, TX0, [(0, T0 + 5 * B), (1, None), (2, T0 + 7 * B), (3, None), (4, None)])
    bucket_5, bucket_7 = T0_BUCKET + 5, T0_BUCKET + 7
    assert list(merge.sources[TX0].chunks[0].buckets) == [bucket_5] * 2 + [bucket_7] * 3
    feed(merge, TX1, [(0, T0 + 5 * B)])
    step = merge.take_ready(NOW)
    assert ids(step.transactions) == ["t0-0", "t1-0"]
    assert [(r.source, r.offset) for r in step.rejected] == [(TX0, 1)]
    assert step.rejected[0].reason.startswith("invalid")
    assert step.advanced[TX0] == 2  # the bad message is done, the one after it waits

    feed(merge, TX1, [(1, T0 + 9 * B)])
    step = merge.take_ready(NOW)
    assert ids(step.transactions) == ["t0-2"]
    assert [r.offset for r in step.rejected] == [3, 4]
    assert step.advanced == {TX0: 5}


def test_a_rejected_message_at_the_start_of_a_chunk_takes_the_partitions_frontier() -> None:
    merge = make(TX0, TX1)
    feed(merge, TX0, [(0, T0 + 5 * B)])
    feed(merge, TX0, [(1, None), (2, T0 + 6 * B)])
    assert list(merge.sources[TX0].chunks[1].buckets) == [T0_BUCKET + 5, T0_BUCKET + 6]
    feed(merge, TX1, [(0, T0 + 5 * B)])
    step = merge.take_ready(NOW)
    assert [r.offset for r in step.rejected] == [1]
    assert step.advanced[TX0] == 2


def test_rejects_of_a_partition_without_a_valid_message_are_released_at_once() -> None:
    merge = make(TX0, TX1)
    feed(merge, TX0, [(0, None), (1, None)])
    assert merge.watermark(NOW) == NEVER  # TX1 has said nothing, TX0 nothing valid
    step = merge.take_ready(NOW)
    assert step.transactions is None
    assert [r.offset for r in step.rejected] == [0, 1]
    assert step.advanced == {TX0: 2}
    assert merge.released_bucket == NEVER  # a reject releases no bucket
    assert merge.late == 0


# ----------------------------------------------------------------------------------- lateness


def test_late_counts_valid_events_below_the_released_bucket() -> None:
    merge = make(TX0, TX1, LB0)
    feed(merge, TX0, [(0, T0 + 5 * B)])
    make_idle(merge, TX1, NOW)
    make_idle(merge, LB0, NOW)
    assert ids(merge.take_ready(NOW).transactions) == ["t0-0"]
    assert merge.released_bucket == T0_BUCKET + 5

    feed(merge, TX1, [(0, T0 + 4 * B + 999), (1, T0 + 5 * B), (2, None), (3, T0 + 3 * B)])
    assert merge.late == 2  # offsets 0 and 3; the open bucket (5) is not late, nor a reject
    feed(merge, LB0, [(0, T0 + 4 * B)])
    assert merge.late == 3
    # A late event is still released (applied at once), in its partition's order, with the
    # partition's frontier as its bucket.
    assert list(merge.sources[TX1].chunks[0].buckets) == [T0_BUCKET + 4] + [T0_BUCKET + 5] * 3
    make_idle(merge, TX1, NOW)
    make_idle(merge, LB0, NOW)
    assert merge.watermark(NOW) == T0_BUCKET + 5  # TX0 (end unknown) holds it
    step = merge.take_ready(NOW)
    assert ids(step.transactions) == ["t1-0", "t1-1", "t1-3"]
    assert [r.offset for r in step.rejected] == [2]
    assert ids(step.labels) == ["l0-0"]
    assert merge.released_bucket == T0_BUCKET + 5


# -------------------------------------------------------------------------------------- reset


def test_reset_forgets_buffers_and_continues_from_the_positions() -> None:
    merge = make(TX0, TX1, LB0)
    feed(merge, TX0, [(0, T0), (1, T0 + B)])
    feed(merge, TX1, [(0, T0)])
    feed(merge, LB0, [(0, T0)])
    merge.take_ready(NOW)
    merge.sources[TX0].high = 7
    assert merge.buffered() > 0 and merge.released_bucket == T0_BUCKET

    merge.reset({TX0: 40, LB0: 3})
    assert merge.positions() == {TX0: 40, TX1: 0, LB0: 3}
    assert merge.buffered() == 0
    assert merge.released_bucket == NEVER
    assert merge.watermark(NOW) == NEVER
    for source in merge.sources.values():
        assert source.frontier == NEVER and source.received_next == -1 and source.high == -1

    feed(merge, TX0, [(40, T0 - 5 * B)])  # before the old released bucket: not late after reset
    feed(merge, TX1, [(0, T0 - 5 * B)])
    feed(merge, LB0, [(3, T0 - 4 * B)])
    assert merge.late == 0
    step = merge.take_ready(NOW)
    assert ids(step.transactions) == ["t0-40", "t1-0"]
    assert step.advanced == {TX0: 41, TX1: 1}


# ---------------------------------------------------------------------------------- splitting


def _chunk(rows: list[int], buckets: list[int]) -> Chunk:
    n = len(rows)
    offsets = np.arange(10, 10 + n, dtype=np.int64)
    valid = [i for i, r in enumerate(rows) if r >= 0]
    table = pa.table({"transaction_id": [f"m{10 + i}" for i in valid]})
    rejected = {
        int(offsets[i]): RejectedMessage(TX0, int(offsets[i]), None, b"", "bad")
        for i, r in enumerate(rows)
        if r < 0
    }
    buckets_array, rows_array = np.array(buckets, np.int64), np.array(rows, np.int64)
    return Chunk(offsets, buckets_array, rows_array, offsets * 10, table, rejected)


def _released_ids(chunk: Chunk) -> list[str]:
    return [chunk.table.column("transaction_id")[int(r)].as_py() for r in chunk.rows if r >= 0]


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_split_keeps_rows_aligned_with_messages(k: int) -> None:
    chunk = _chunk([-1, 0, 1, -1, 2, 3], [1, 1, 2, 2, 2, 3])
    head, tail = chunk.split(k)
    assert len(head) == k and len(tail) == 6 - k
    for part in (head, tail):
        assert part.table.num_rows == int(np.count_nonzero(part.rows >= 0))
        pairs = list(zip(part.offsets.tolist(), part.rows.tolist(), strict=True))
        assert _released_ids(part) == [f"m{o}" for o, r in pairs if r >= 0]
        assert set(part.rejected) == {o for o, r in pairs if r < 0}
    assert list(head.offsets) + list(tail.offsets) == list(chunk.offsets)


# ------------------------------------------------------------------ the merge against a model


@dataclass
class _Model:
    """What the merge should do, written from the rules in the module docstring."""

    sid: SourceId
    next_offset: int
    frontier: int = NEVER
    received: int = -1
    high: int = -1
    last_arrival: float = 0.0
    pending: list[tuple[int, int, bool]] = field(default_factory=list)  # offset, bucket, valid
    released: list[int] = field(default_factory=list)  # valid offsets released, in order

    def idle(self, now: float) -> bool:
        fetched = self.received if self.received >= 0 else self.next_offset
        return self.high >= 0 and fetched >= self.high and now - self.last_arrival >= 1.0


_MESSAGE = st.one_of(st.none(), st.integers(0, 6))  # None: rejected; else the event's own bucket


@st.composite
def _scenario(draw: st.DrawFn) -> tuple[list[SourceId], dict[SourceId, list[list[Message]]]]:
    n_tx = draw(st.integers(1, 3))
    n_labels = draw(st.integers(0, 2))
    sids = [SourceId(TRANSACTIONS, p) for p in range(n_tx)]
    sids += [SourceId(LABELS, p) for p in range(n_labels)]
    chunks: dict[SourceId, list[list[Message]]] = {}
    for sid in sids:
        offset = draw(st.integers(0, 50))
        lists = draw(st.lists(st.lists(_MESSAGE, min_size=1, max_size=6), max_size=5))
        out = []
        for messages in lists:
            chunk = []
            for bucket in messages:
                ms = None if bucket is None else T0 + bucket * B + draw(st.integers(0, B - 1))
                chunk.append((offset, ms))
                offset += draw(st.sampled_from([1, 1, 1, 2]))  # transaction markers: gaps
            out.append(chunk)
        chunks[sid] = out
    return sids, chunks


def _check_step(step: Step, models: dict[SourceId, _Model], mark: int) -> tuple[int, int]:
    """Compare one step with the model; returns the highest released bucket of a valid event,
    and of a valid label."""
    top = NEVER
    label_top = NEVER
    table_ids = ids(step.transactions)
    assert len(table_ids) == len(step.partitions) == len(step.offsets) == len(step.arrived_ms)
    for name, p, o in zip(table_ids, step.partitions, step.offsets, strict=True):
        assert name == name_of(SourceId(TRANSACTIONS, int(p)), int(o))
    np.testing.assert_array_equal(step.arrived_ms, step.offsets * 10)
    label_ids = ids(step.labels)
    rejected = [(r.source, r.offset) for r in step.rejected]
    assert len(set(rejected)) == len(rejected)
    for sid, model in models.items():
        limit = mark if sid.kind == TRANSACTIONS else mark - 1
        ready = 0
        while ready < len(model.pending) and model.pending[ready][1] <= limit:
            ready += 1
        expected, model.pending = model.pending[:ready], model.pending[ready:]
        prefix = f"{sid.kind[0]}{sid.partition}-"
        names = table_ids if sid.kind == TRANSACTIONS else label_ids
        released_names = [n for n in names if n.startswith(prefix)]
        assert released_names == [name_of(sid, o) for o, _, ok in expected if ok]
        assert [o for s, o in rejected if s == sid] == [o for o, _, ok in expected if not ok]
        if expected:
            model.next_offset = expected[-1][0] + 1
            assert step.advanced[sid] == model.next_offset
        else:
            assert sid not in step.advanced
        model.released += [o for o, _, ok in expected if ok]
        top = max([top] + [b for _, b, ok in expected if ok])
        if sid.kind == LABELS:
            label_top = max([label_top] + [b for _, b, ok in expected if ok])
    return top, label_top


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=_scenario(), data=st.data())
def test_random_interleavings_release_every_event_once_in_order_never_early(
    scenario: tuple[list[SourceId], dict[SourceId, list[list[Message]]]], data: st.DataObject
) -> None:
    sids, chunks = scenario
    merge = EventTimeMerge(IDLE_MS, bucket_ms=B)
    models: dict[SourceId, _Model] = {}
    for sid in sids:
        first = chunks[sid][0][0][0] if chunks[sid] else 0
        merge.add_source(sid, first)
        models[sid] = _Model(sid, first)
        merge.sources[sid].last_arrival = 0.0
    clock = 0.0
    released = NEVER
    closed = NEVER  # highest bucket of a released label: its second's labels were applied
    late = 0
    while any(chunks.values()):
        action = data.draw(st.sampled_from(["add", "add", "take", "clock", "high"]))
        sid = data.draw(st.sampled_from(sids))
        model, source = models[sid], merge.sources[sid]
        if action == "add" and chunks[sid]:
            messages = chunks[sid].pop(0)
            paused = clock - max(m.last_arrival for m in models.values()) >= RESUME_AFTER_S
            if paused and all(m.idle(clock) for m in models.values()):
                for m in models.values():  # after a pause of every partition
                    m.last_arrival = clock  # every idle clock restarts
            feed(merge, sid, messages, now=clock)
            source.last_arrival = model.last_arrival = clock
            for offset, ms in messages:
                own = None if ms is None else ms // B
                late += own is not None and (
                    own < released or (sid.kind == TRANSACTIONS and own <= closed)
                )
                model.frontier = max(model.frontier, NEVER if own is None else own)
                model.pending.append((offset, model.frontier, own is not None))
            model.received = messages[-1][0] + 1
            assert merge.late == late
        elif action == "clock":
            clock += data.draw(st.sampled_from([0.25, 1.0, 5.0]))
        elif action == "high":
            fetched = model.received if model.received >= 0 else model.next_offset
            source.high = model.high = fetched + data.draw(st.sampled_from([-1, 0, 0, 1]))
        elif action == "take":
            mark = min(
                (ALWAYS if m.idle(clock) else m.frontier for m in models.values()), default=NEVER
            )
            assert merge.watermark(clock) == mark
            step = merge.take_ready(clock)
            top, label_top = _check_step(step, models, mark)
            released, closed = max(released, top), max(closed, label_top)
            assert merge.released_bucket == released
            assert merge.positions() == {s: m.next_offset for s, m in models.items()}

    # Everything delivered; every partition caught up and quiet: everything is released.
    clock += 5.0
    for sid, model in models.items():
        make_idle(merge, sid, clock)
        model.high = merge.sources[sid].high
        model.last_arrival = merge.sources[sid].last_arrival
    assert merge.watermark(clock) == ALWAYS
    _check_step(merge.take_ready(clock), models, ALWAYS)
    assert merge.buffered() == 0
    assert merge.take_ready(clock).empty
    for model in models.values():
        assert not model.pending
        assert model.released == sorted(model.released)  # per-partition offset order
