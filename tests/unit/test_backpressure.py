"""Backpressure of the event-time merge: which partitions the worker pauses (stream/merge.py)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from stream.merge import LABELS, TRANSACTIONS, EventTimeMerge, SourceId

T0 = 1_700_000_000_000
TX0, TX1, LB0 = SourceId(TRANSACTIONS, 0), SourceId(TRANSACTIONS, 1), SourceId(LABELS, 0)


def _add(merge: EventTimeMerge, sid: SourceId, first_offset: int, event_ms: list[int]) -> None:
    n = len(event_ms)
    offsets = np.arange(first_offset, first_offset + n, dtype=np.int64)
    merge.add(
        sid,
        offsets,
        np.array(event_ms, np.int64),
        np.arange(n, dtype=np.int64),
        np.zeros(n, np.int64),
        pa.table({"row": list(range(n))}),
        [],
    )


def _merge() -> EventTimeMerge:
    merge = EventTimeMerge(idle_ms=60_000.0)  # nobody turns idle during the test
    for sid in (TX0, TX1, LB0):
        merge.add_source(sid, 0)
    return merge


def test_a_partition_ahead_of_the_watermark_is_held_back_and_released() -> None:
    merge = _merge()
    _add(merge, TX1, 0, [T0])  # TX1 and the labels partition hold the watermark at T0
    _add(merge, LB0, 0, [T0])  # (a label waits for its second to close)
    _add(merge, TX0, 0, [T0 + 5_000 + i for i in range(30)])  # 5 s ahead: must wait
    merge.take_ready()
    assert merge.buffered() == 30 + 1
    assert merge.to_hold_back(limit=20) == {TX0}
    assert merge.to_hold_back(limit=30) == set()  # at the limit, not over it

    # the slow partitions catch up: TX0's messages are released and it is read again
    _add(merge, TX1, 1, [T0 + 6_000])
    _add(merge, LB0, 1, [T0 + 6_000])
    step = merge.take_ready()  # up to TX0's second (T0 + 5 s), now the lowest frontier
    assert step.transactions is not None and step.transactions.num_rows == 30
    assert merge.to_hold_back(limit=20) == set()


def test_the_partition_holding_the_watermark_is_never_paused() -> None:
    """Else nothing could ever be released: pausing stops only partitions that wait for it."""
    merge = _merge()
    _add(merge, TX0, 0, [T0 + 9_000])
    _add(merge, TX1, 0, [T0 + 9_000])
    _add(merge, LB0, 0, [T0 + i for i in range(50)])  # labels wait for their second to close
    merge.take_ready()
    assert merge.watermark() == T0 // 1_000
    assert merge.buffered() == 52  # labels of the open second, transactions ahead of it
    assert LB0 not in merge.to_hold_back(limit=10)
    assert merge.to_hold_back(limit=0) == {TX0, TX1}
