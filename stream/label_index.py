"""Which card, merchant and terminal a late label is about.

A label names only its transaction; the state it updates belongs to that transaction's card,
merchant and terminal. Offline, ``label_events`` joins labels with the log; online the worker
remembers each transaction's keys for ``retention`` (labels arrive days to weeks later), with the
same matching rules: a label that names its bank matches that bank's transaction, one that does
not matches the first transaction with that id, and a label for an unknown transaction is dropped.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
import pyarrow as pa

from scoring.features.engine import LABEL_EVENT_SCHEMA
from scoring.logs import TIMESTAMP

Keys = tuple[str | None, str | None, str | None, str | None]  # bank, card, merchant, terminal
# Rows converted per GIL-holding Arrow call when a checkpoint is written. With 4096 rows per call
# a thread waiting for the GIL woke 45-60 ms late, again and again, for the whole 300 ms build (300k
# rows); with 512 and a yield after each, at most ~3 ms late, and the build took 130 ms instead
# (tests of session 6; the convoy of GIL hand-overs slowed both threads).
TABLE_SLICE = 512

_TABLE_SCHEMA = pa.schema(
    [
        pa.field("transaction_id", pa.string()),
        pa.field("bank_id", pa.string()),
        pa.field("card_id", pa.string()),
        pa.field("merchant_id", pa.string()),
        pa.field("terminal_id", pa.string()),
        pa.field("timestamp_ms", pa.int64()),
    ]
)


def _column(table: pa.Table, name: str) -> list[str | None]:
    if name not in table.column_names:
        return [None] * table.num_rows
    return table.column(name).to_pylist()


class LabelIndex:
    def __init__(self, retention_ms: int) -> None:
        self.retention_ms = retention_ms
        self._keys: dict[str, Keys | list[Keys]] = {}
        self._order: deque[tuple[int, str, Keys]] = deque()  # arrival order, for eviction
        self.unmatched = 0  # labels of transactions this worker never saw (or forgot)

    def __len__(self) -> int:
        return len(self._order)

    def add(self, transactions: pa.Table) -> np.ndarray:
        """Remember the transactions' keys. Returns a mask of the rows this index already knew
        (same bank and transaction id): resent transactions, which must not be decided or
        counted again. Only the first of them is remembered."""
        ids = transactions.column("transaction_id").to_pylist()
        stamps = transactions.column("timestamp").cast(TIMESTAMP).cast(pa.int64()).to_pylist()
        columns = zip(
            _column(transactions, "bank_id"),
            _column(transactions, "card_id"),
            _column(transactions, "merchant_id"),
            _column(transactions, "terminal_id"),
            strict=True,
        )
        keys = list(columns)
        known = self._keys
        seen = np.zeros(len(ids), dtype=bool)
        if len(set(ids)) == len(ids) and known.keys().isdisjoint(ids):
            known.update(zip(ids, keys, strict=True))  # the usual case, at C speed
            self._order.extend(zip(stamps, ids, keys, strict=True))
            return seen
        for i, (stamp, tx_id, key) in enumerate(zip(stamps, ids, keys, strict=True)):
            if self._same_bank(tx_id, key[0]):
                seen[i] = True
                continue
            self._remember(tx_id, key)
            self._order.append((stamp, tx_id, key))
        return seen

    def _same_bank(self, tx_id: str, bank: str | None) -> bool:
        known = self._keys.get(tx_id)
        if known is None:
            return False
        candidates = known if isinstance(known, list) else [known]
        return any(k[0] == bank for k in candidates)

    def _remember(self, tx_id: str, keys: Keys) -> None:
        known = self._keys.get(tx_id)
        if known is None:
            self._keys[tx_id] = keys
        elif isinstance(known, list):
            known.append(keys)
        else:
            self._keys[tx_id] = [known, keys]

    def _find(self, tx_id: str, bank: str | None) -> Keys | None:
        known = self._keys.get(tx_id)
        if known is None:
            return None
        candidates = known if isinstance(known, list) else [known]
        if bank is None:
            return candidates[0]
        return next((k for k in candidates if k[0] == bank), None)

    def label_events(self, labels: pa.Table) -> pa.Table | None:
        """Labels joined with their transaction's keys (LABEL_EVENT_SCHEMA), in the given order;
        labels of unknown transactions are dropped and counted."""
        found: list[int] = []
        keys: list[Keys] = []
        for i, (tx_id, bank) in enumerate(
            zip(
                labels.column("transaction_id").to_pylist(), _column(labels, "bank_id"), strict=True
            )
        ):
            match = self._find(tx_id, bank)
            if match is None:
                self.unmatched += 1
                continue
            found.append(i)
            keys.append(match)
        if not found:
            return None
        picked = labels.take(pa.array(found, pa.int64()))
        banks, cards, merchants, terminals = (list(c) for c in zip(*keys, strict=True))
        return pa.table(
            {
                "reported_at": picked.column("reported_at"),
                "is_fraud": picked.column("is_fraud"),
                "card_id": pa.array(cards, pa.string()),
                "bank_id": pa.array(banks, pa.string()),
                "merchant_id": pa.array(merchants, pa.string()),
                "terminal_id": pa.array(terminals, pa.string()),
            },
            schema=LABEL_EVENT_SCHEMA,
        )

    def evict(self, now_ms: int) -> int:
        """Forget transactions older than the retention; returns how many."""
        cutoff = now_ms - self.retention_ms
        forgotten = 0
        order = self._order
        while order and order[0][0] < cutoff:
            _, tx_id, keys = order.popleft()
            known = self._keys.get(tx_id)
            if isinstance(known, list):
                known.remove(keys)
                if len(known) == 1:
                    self._keys[tx_id] = known[0]
            else:
                del self._keys[tx_id]
            forgotten += 1
        return forgotten

    # ---------------------------------------------------------------------------- checkpoints

    def to_table(self) -> pa.Table:
        return table_of(self.entries())

    def entries(self) -> list[tuple[int, str, Keys]]:
        """What a checkpoint keeps, as a copy (of references to immutable tuples: ~1 ms per 100k
        transactions), so that the table can be built off the loop while the index moves on."""
        return list(self._order)

    @classmethod
    def from_table(cls, table: pa.Table, retention_ms: int) -> LabelIndex:
        index = cls(retention_ms)
        columns = [table.column(name).to_pylist() for name in _TABLE_SCHEMA.names]
        for tx_id, bank, card, merchant, terminal, stamp in zip(*columns, strict=True):
            keys = (bank, card, merchant, terminal)
            index._remember(tx_id, keys)
            index._order.append((stamp, tx_id, keys))
        return index


def table_of(entries: list[tuple[int, str, Keys]]) -> pa.Table:
    """The checkpoint table of :meth:`LabelIndex.entries` (~2 µs per transaction). Built in slices
    because each Arrow conversion holds the GIL throughout: the checkpoint writer's thread must
    not stop the worker's loop for more than a few ms at a time."""
    if not entries:
        return _TABLE_SCHEMA.empty_table()
    slices = []
    for start in range(0, len(entries), TABLE_SLICE):
        slices.append(_slice_table(entries[start : start + TABLE_SLICE]))
        time.sleep(0)  # hand the GIL to a waiting thread (the worker's loop) between slices
    return pa.concat_tables(slices)


def _slice_table(entries: list[tuple[int, str, Keys]]) -> pa.Table:
    stamps, ids, keys = zip(*entries, strict=True)
    banks, cards, merchants, terminals = zip(*keys, strict=True)
    return pa.table(
        [
            pa.array(ids, pa.string()),
            pa.array(banks, pa.string()),
            pa.array(cards, pa.string()),
            pa.array(merchants, pa.string()),
            pa.array(terminals, pa.string()),
            pa.array(np.asarray(stamps, np.int64)),
        ],
        schema=_TABLE_SCHEMA,
    )
