"""LabelIndex: the online join of labels with their transactions, against the offline one
(``scoring.features.engine.label_events``), eviction after the retention, checkpoint round trip."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scoring.features.engine import LABEL_EVENT_SCHEMA, label_events
from scoring.logs import LABEL_SCHEMA, TIMESTAMP
from stream import label_index
from stream.label_index import LabelIndex

DAY = 86_400_000
T0 = 1_700_000_000_000

Tx = tuple[str, str | None, str, str | None, str | None, int]  # id, bank, card, merchant, term, ms
Label = tuple[str, str | None, bool, int]  # id, bank, is_fraud, reported ms


def tx_table(rows: list[Tx]) -> pa.Table:
    columns = [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(6)]
    ids, banks, cards, merchants, terminals, stamps = columns
    return pa.table(
        {
            "transaction_id": pa.array(ids, pa.string()),
            "card_id": pa.array(cards, pa.string()),
            "timestamp": pa.array(stamps, pa.int64()).cast(TIMESTAMP),
            "amount": pa.array([1.0] * len(rows), pa.float64()),
            "bank_id": pa.array(banks, pa.string()),
            "merchant_id": pa.array(merchants, pa.string()),
            "terminal_id": pa.array(terminals, pa.string()),
        }
    )


def label_table(rows: list[Label]) -> pa.Table:
    return pa.table(
        {
            "transaction_id": pa.array([r[0] for r in rows], pa.string()),
            "is_fraud": pa.array([r[2] for r in rows], pa.bool_()),
            "reported_at": pa.array([r[3] for r in rows], pa.int64()).cast(TIMESTAMP),
            "bank_id": pa.array([r[1] for r in rows], pa.string()),
            "source": pa.array([None] * len(rows), pa.string()),
        },
        schema=LABEL_SCHEMA,
    )


def as_rows(table: pa.Table | None) -> list[tuple[object, ...]]:
    if table is None:
        return []
    assert table.schema == LABEL_EVENT_SCHEMA
    return [tuple(r.values()) for r in table.to_pylist()]


def index_of(rows: list[Tx], *, retention_ms: int = 90 * DAY, chunk: int = 0) -> LabelIndex:
    index = LabelIndex(retention_ms)
    step = chunk or max(len(rows), 1)
    for start in range(0, len(rows), step):
        index.add(tx_table(rows[start : start + step]))
    return index


# ----------------------------------------------------------------------- examples by hand


TXS: list[Tx] = [
    ("t1", "b1", "c1", "m1", "x1", T0),
    ("t2", None, "c2", "m2", None, T0 + 1),
    ("dup", "b1", "c3", "m3", "x3", T0 + 2),  # one id, two banks
    ("dup", "b2", "c4", "m4", "x4", T0 + 3),
]


def test_labels_find_their_transaction_by_bank_or_by_id() -> None:
    index = index_of(TXS)
    labels = label_table(
        [
            ("dup", "b2", True, T0 + 10),  # names its bank: that bank's transaction
            ("dup", None, False, T0 + 11),  # no bank: the first transaction with the id
            ("dup", "b1", True, T0 + 12),
            ("dup", "b9", True, T0 + 13),  # a bank that never sent it: dropped
            ("t2", "b1", True, T0 + 14),  # the transaction has no bank: a bank label misses
            ("t2", None, True, T0 + 15),
            ("nope", None, True, T0 + 16),  # unknown: dropped
            ("t1", None, False, T0 + 17),
        ]
    )
    events = index.label_events(labels)
    assert index.unmatched == 3
    assert events is not None
    assert [(r["card_id"], r["bank_id"], r["is_fraud"]) for r in events.to_pylist()] == [
        ("c4", "b2", True),
        ("c3", "b1", False),
        ("c3", "b1", True),
        ("c2", None, True),
        ("c1", "b1", False),
    ]
    assert sorted(as_rows(events)) == sorted(as_rows(label_events(tx_table(TXS), labels)))


def test_only_unknown_labels_give_none() -> None:
    index = index_of(TXS)
    assert index.label_events(label_table([("x", None, True, T0), ("t1", "b2", True, T0)])) is None
    assert index.unmatched == 2
    assert LabelIndex(DAY).label_events(label_table([])) is None


# ------------------------------------------------------------------ random logs, both joins

_IDS = st.sampled_from(["a", "b", "c", "d", "e"])
_BANKS = st.sampled_from([None, "b1", "b2"])
_TX = st.tuples(
    _IDS,
    _BANKS,
    st.sampled_from(["c1", "c2", "c3"]),
    st.sampled_from([None, "m1", "m2"]),
    st.sampled_from([None, "x1", "x2"]),
    st.integers(T0, T0 + 10 * DAY),
)


# A log never holds one bank's transaction id twice (the reader refuses it); a resent one is
# dropped by the index (test_a_resent_transaction_is_reported_and_not_remembered).
def _BANK_AND_ID(tx: Tx) -> tuple[str, str | None]:  # noqa: N802 -- used like a constant
    return tx[0], tx[1]


_LABEL = st.tuples(
    st.one_of(_IDS, st.just("unknown")),
    st.one_of(_BANKS, st.just("b3")),
    st.booleans(),
    st.integers(T0, T0 + 20 * DAY),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    txs=st.lists(_TX, max_size=15, unique_by=_BANK_AND_ID),
    labels=st.lists(_LABEL, max_size=15),
    chunk=st.integers(0, 4),
    banks=st.sampled_from(["any", "all", "none"]),
)
def test_the_index_matches_the_offline_join(
    txs: list[Tx], labels: list[Label], chunk: int, banks: str
) -> None:
    if banks == "all":  # every label names a bank (the offline join has a branch for it)
        labels = [(i, b or "b1", f, r) for i, b, f, r in labels]
    elif banks == "none":
        labels = [(i, None, f, r) for i, _, f, r in labels]
    index = index_of(txs, chunk=chunk)
    assert len(index) == len(txs)
    online = as_rows(index.label_events(label_table(labels)))
    offline = as_rows(label_events(tx_table(txs), label_table(labels)))
    assert Counter(online) == Counter(offline)
    assert index.unmatched == len(labels) - len(offline)
    assert online == reference_join(txs, labels)  # and the index keeps the labels' order


def reference_join(txs: list[Tx], labels: list[Label]) -> list[tuple[object, ...]]:
    """The matching rules, one label at a time: the first transaction with the id (and the
    label's bank, when it names one)."""
    out: list[tuple[object, ...]] = []
    for tx_id, bank, fraud, reported in labels:
        match = next((t for t in txs if t[0] == tx_id and bank in (None, t[1])), None)
        if match is not None:
            when = pa.scalar(reported, pa.int64()).cast(TIMESTAMP).as_py()
            out.append((when, fraud, match[2], match[1], match[3], match[4]))
    return out


# ------------------------------------------------------------------------------- eviction


def test_evict_forgets_only_transactions_older_than_the_retention() -> None:
    rows: list[Tx] = [
        ("old", "b1", "c1", "m1", "x1", T0),
        ("dup", "b1", "c2", "m2", "x2", T0 + 1),  # forgotten ...
        ("mid", None, "c3", "m3", None, T0 + DAY),
        ("dup", "b2", "c4", "m4", "x4", T0 + 2 * DAY),  # ... while this one stays
    ]
    index = index_of(rows, retention_ms=DAY, chunk=1)
    assert index.evict(T0 + DAY) == 0  # nothing older than a day yet (T0 is exactly a day old)
    assert index.evict(T0 + DAY + 2) == 2
    assert len(index) == 2
    events = index.label_events(
        label_table(
            [
                ("old", None, True, T0 + 2 * DAY),
                ("dup", "b1", True, T0 + 2 * DAY),
                ("dup", None, True, T0 + 2 * DAY),  # now the b2 one, the first still known
                ("mid", None, True, T0 + 2 * DAY),
            ]
        )
    )
    assert index.unmatched == 2
    assert events is not None
    assert events.column("card_id").to_pylist() == ["c4", "c3"]
    assert index.evict(T0 + 3 * DAY) == 1  # "mid"; "dup"/b2 is exactly a day old: kept
    assert index.evict(T0 + 10 * DAY) == 1
    assert len(index) == 0 and index.to_table().num_rows == 0


@settings(max_examples=150, deadline=None)
@given(
    txs=st.lists(_TX, max_size=15, unique_by=_BANK_AND_ID),
    now=st.integers(T0, T0 + 12 * DAY),
    retention=st.integers(0, 5 * DAY),
    chunk=st.integers(0, 3),
)
def test_evict_never_forgets_a_recent_transaction(
    txs: list[Tx], now: int, retention: int, chunk: int
) -> None:
    index = index_of(txs, retention_ms=retention, chunk=chunk)
    forgotten = index.evict(now)
    kept = [tuple(r.values()) for r in index.to_table().to_pylist()]
    assert forgotten + len(kept) == len(txs) == forgotten + len(index)
    # Eviction is in arrival order: what is forgotten is a prefix, every entry of it too old.
    as_index = [(i, b, c, m, t, s) for i, b, c, m, t, s in txs]
    assert kept == as_index[forgotten:]
    assert all(s < now - retention for *_, s in as_index[:forgotten])
    # What remains answers like an index built from the remaining transactions alone.
    labels = label_table([(i, b, True, now) for i in "abcde" for b in (None, "b1", "b2")])
    fresh = index_of(txs[forgotten:], retention_ms=retention)
    assert as_rows(index.label_events(labels)) == as_rows(fresh.label_events(labels))


# ---------------------------------------------------------------------------- checkpoints


@settings(max_examples=100, deadline=None)
@given(txs=st.lists(_TX, max_size=15, unique_by=_BANK_AND_ID), labels=st.lists(_LABEL, max_size=10))
def test_to_table_from_table_round_trip(txs: list[Tx], labels: list[Label]) -> None:
    index = index_of(txs, retention_ms=3 * DAY, chunk=2)
    table = index.to_table()
    again = LabelIndex.from_table(table, 3 * DAY)
    assert again.retention_ms == 3 * DAY
    assert len(again) == len(index)
    assert again.to_table().equals(table)
    assert as_rows(again.label_events(label_table(labels))) == as_rows(
        index.label_events(label_table(labels))
    )
    assert again.unmatched == index.unmatched
    # Eviction after a restore forgets the same transactions.
    assert again.evict(T0 + 5 * DAY) == index.evict(T0 + 5 * DAY)
    assert again.to_table().equals(index.to_table())


def test_an_empty_index_round_trips() -> None:
    table = LabelIndex(DAY).to_table()
    assert table.num_rows == 0
    again = LabelIndex.from_table(table, DAY)
    assert len(again) == 0 and again.to_table().equals(table)


def test_a_resent_transaction_is_reported_and_not_remembered() -> None:
    index = LabelIndex(90 * DAY)
    first = index.add(tx_table(TXS))
    assert not first.any()
    again = index.add(tx_table([("t1", "b1", "c9", "m9", "x9", T0 + 5), ("t1", "b2", "c5", None,
                                None, T0 + 6)]))  # fmt: skip
    assert again.tolist() == [True, False]  # same bank and id: resent; another bank: new
    assert len(index) == len(TXS) + 1
    events = index.label_events(label_table([("t1", "b1", True, T0 + DAY)]))
    assert as_rows(events)[0][2] == "c1"  # the first transaction's card, not the resent one's


def test_the_checkpoint_table_is_built_in_slices_and_from_a_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The writer thread builds the table slice by slice from entries copied on the loop: the
    same table as one slice, and what the index does afterwards does not change it."""
    txs: list[Tx] = [(f"t{i}", "b1", f"c{i % 4}", "m1", None, T0 + i * 1000) for i in range(10)]
    index = index_of(txs, retention_ms=DAY)
    whole = index.to_table()
    entries = index.entries()
    monkeypatch.setattr(label_index, "TABLE_SLICE", 3)
    index.add(tx_table([("late", "b1", "c9", None, None, T0 + DAY)]))
    index.evict(T0 + DAY + 5_000)  # forgets t0..t4
    sliced = label_index.table_of(entries)
    assert sliced.num_rows == 10 and sliced.equals(whole)
    assert label_index.table_of(index.entries()).num_rows == 6  # t5..t9 and "late"
