"""The trainer's memory: a bounded window of scored transactions joined with their labels.

Three topics feed it, in any order (docs/training.md, "The join"):

* ``transactions`` — when the transaction happened (event time), its card, amount, bank and the
  fields the decision policy's rules read (merchant, country);
* ``feature-log`` — the exact feature vector the worker scored the transaction with (so the model
  learns from what it will see: no training/serving skew), with the serving model's version;
* ``labels`` — fraud reports, days or weeks later.

Rows are keyed by ``(bank_id, transaction_id)`` (a bank's ids are unique; no bank is its own key)
and created by whichever record comes first. A label is kept on its own until its transaction's
row exists, and applied to it then; a label that names no bank applies to the transaction of that
id in every bank (the offline join's rule, ``training.dataset.fraud_targets``). A transaction is
fraudulent as of time T when a fraud label reported at or before T exists; any fraud label wins
over explicit genuine labels, which otherwise change nothing (an explicit "genuine" does not make a
transaction usable before it matures: such labels are a biased sample of alerted transactions and a
fraud report can still follow). Duplicate records keep the first one (the worker decides a
transaction once; a resent transaction is not decided again).

The store knows no clock: callers pass event times. Memory is bounded by :meth:`WindowStore.evict`
(rows older than the window; rows that never got their transaction record) and is about 700 bytes
per transaction (66 float64 features, a few columns, the key in a dict).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from scoring.features import NUM_FEATURES
from scoring.logs import TIMESTAMP

NO_FRAUD = np.iinfo(np.int64).max  # fraud_ms of a row without a fraud label
UNKNOWN = np.iinfo(np.int64).min  # ts_ms of a row whose transaction record has not arrived


def row_key(bank_id: str | None, transaction_id: str) -> str:
    """``<len(bank)>:<bank><id>``: one string (cheaper than a tuple), unambiguous for any ids."""
    bank = bank_id or ""
    return f"{len(bank)}:{bank}{transaction_id}"


def key_transaction_id(key: str) -> str:
    length, _, rest = key.partition(":")
    return rest[int(length) :]


class Vocabulary:
    """Strings to small integer codes (code 0 is "absent")."""

    def __init__(self) -> None:
        self.codes: dict[str | None, int] = {None: 0}
        self.values: list[str | None] = [None]

    def encode(self, values: Sequence[str | None]) -> np.ndarray:
        codes = self.codes
        out = np.empty(len(values), np.int32)
        for i, value in enumerate(values):
            code = codes.get(value)
            if code is None:
                code = codes[value] = len(self.values)
                self.values.append(value)
            out[i] = code
        return out

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return np.asarray(self.values, dtype=object)[codes]


@dataclass(frozen=True)
class RowSet:
    """Copies of some rows, for one training round (the store goes on changing meanwhile)."""

    X: np.ndarray  # float64 [n, NUM_FEATURES], exactly as scored
    y: np.ndarray  # int8, 1 = fraud as of the round's clock
    ts_ms: np.ndarray  # int64 event time
    amount: np.ndarray  # float64
    bank: np.ndarray  # object: bank_id or None
    card: np.ndarray  # int32 codes (card precision@k only needs identity)
    card_id: np.ndarray  # object (the policy's allow and block lists)
    merchant: np.ndarray  # object (the policy's block lists)
    country: np.ndarray  # object
    model_version: np.ndarray  # object: the model that scored the row online

    def __len__(self) -> int:
        return len(self.y)

    @property
    def frauds(self) -> int:
        return int(self.y.sum())

    def take(self, rows: np.ndarray) -> RowSet:
        return RowSet(*(getattr(self, f)[rows] for f in RowSet.__dataclass_fields__))

    def between(self, start_ms: int | None, until_ms: int) -> RowSet:
        """Rows with ``start_ms <= ts < until_ms`` (in time order)."""
        low = np.iinfo(np.int64).min if start_ms is None else start_ms
        return self.take(np.flatnonzero((self.ts_ms >= low) & (self.ts_ms < until_ms)))

    def policy_table(self) -> pa.Table:
        """What :meth:`scoring.decision.DecisionPolicy.decide_many` reads."""
        return pa.table(
            {
                "amount": pa.array(self.amount, pa.float64()),
                "bank_id": pa.array(self.bank.tolist(), pa.string()),
                "card_id": pa.array(self.card_id.tolist(), pa.string()),
                "merchant_id": pa.array(self.merchant.tolist(), pa.string()),
                "country": pa.array(self.country.tolist(), pa.string()),
            }
        )


@dataclass(frozen=True)
class WindowCounts:
    joined: int  # rows with both a transaction and a feature vector
    matured: int  # of those, old enough to be negatives (or known frauds) as of the clock
    frauds: int  # joined rows with a fraud label known as of the clock
    unjoined: int  # rows still waiting for their transaction or feature record


class WindowStore:
    """Joined rows in columns; see the module docstring."""

    def __init__(self, *, capacity: int = 4096) -> None:
        self.size = 0
        self.keys: list[str] = []
        self.index: dict[str, int] = {}
        self._alloc(max(capacity, 16))
        self.banks = Vocabulary()
        self.cards = Vocabulary()
        self.merchants = Vocabulary()
        self.countries = Vocabulary()
        self.versions = Vocabulary()
        # fraud labels not yet applied to a row: earliest report time per key / per id (no bank)
        self.fraud_labels: dict[str, int] = {}
        self.fraud_labels_any_bank: dict[str, int] = {}
        self.bank_ids: set[str] = {""}  # every bank seen on a row ("" = none), for bankless labels
        # what was seen, for logs and metrics
        self.duplicate_transactions = 0
        self.duplicate_features = 0
        self.genuine_labels = 0
        self.fraud_label_count = 0
        self.evicted_orphans = 0

    # -------------------------------------------------------------------------------- storage

    def _alloc(self, capacity: int) -> None:
        self.capacity = capacity
        self.ts_ms = np.full(capacity, UNKNOWN, np.int64)
        self.fraud_ms = np.full(capacity, NO_FRAUD, np.int64)
        self.seen_ms = np.zeros(capacity, np.int64)  # Kafka time of the row's first record
        self.amount = np.zeros(capacity, np.float64)
        self.score = np.full(capacity, np.nan, np.float64)
        self.features = np.full((capacity, NUM_FEATURES), np.nan, np.float64)
        self.has_tx = np.zeros(capacity, bool)
        self.has_features = np.zeros(capacity, bool)
        self.bank = np.zeros(capacity, np.int32)
        self.card = np.zeros(capacity, np.int32)
        self.merchant = np.zeros(capacity, np.int32)
        self.country = np.zeros(capacity, np.int32)
        self.version = np.zeros(capacity, np.int32)

    _COLUMNS = (
        "ts_ms", "fraud_ms", "seen_ms", "amount", "score", "features", "has_tx", "has_features",
        "bank", "card", "merchant", "country", "version",
    )  # fmt: skip

    def _grow(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        capacity = self.capacity
        while capacity < needed:
            capacity *= 2
        old = {name: getattr(self, name) for name in self._COLUMNS}
        self._alloc(capacity)
        for name, values in old.items():
            getattr(self, name)[: self.size] = values[: self.size]

    def _slots(self, keys: Sequence[str], seen_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each key's row (created when new) and whether this is the key's first occurrence in
        ``keys`` (later occurrences in the same batch are duplicates)."""
        slots = np.empty(len(keys), np.int64)
        first = np.ones(len(keys), bool)
        index = self.index
        new: list[int] = []
        batch: dict[str, int] = {}
        for i, key in enumerate(keys):
            slot = batch.get(key)
            if slot is not None:
                first[i] = False
            else:
                slot = index.get(key)
                if slot is None:
                    slot = self.size + len(new)
                    new.append(i)
                batch[key] = slot
            slots[i] = slot
        if new:
            self._grow(self.size + len(new))
            for i in new:
                index[keys[i]] = int(slots[i])
                self.keys.append(keys[i])
            created = slots[new]
            self.seen_ms[created] = seen_ms[new]
            self.size += len(new)
            self._apply_waiting_labels(created)
        return slots, first

    def _apply_waiting_labels(self, rows: np.ndarray) -> None:
        if not self.fraud_labels and not self.fraud_labels_any_bank:
            return
        for row in rows.tolist():
            key = self.keys[row]
            reported = self.fraud_labels.pop(key, None)
            anyone = self.fraud_labels_any_bank.get(key_transaction_id(key))
            for when in (reported, anyone):
                if when is not None and when < self.fraud_ms[row]:
                    self.fraud_ms[row] = when

    # -------------------------------------------------------------------------------- input

    def add_transactions(self, table: pa.Table, kafka_ms: np.ndarray | int = 0) -> int:
        """Decoded transactions (``scoring.wire.decode_transactions``); returns rows added."""
        n = table.num_rows
        if n == 0:
            return 0
        ids = table.column("transaction_id").to_pylist()
        banks = table.column("bank_id").to_pylist()
        keys = [row_key(b, t) for b, t in zip(banks, ids, strict=True)]
        slots, first = self._slots(keys, np.broadcast_to(np.asarray(kafka_ms, np.int64), (n,)))
        fresh = first & ~self.has_tx[slots]
        self.duplicate_transactions += int(n - fresh.sum())
        if not fresh.any():
            return 0
        take = np.flatnonzero(fresh)
        rows = slots[take]
        ts = table.column("timestamp").cast(TIMESTAMP).cast(pa.int64()).to_numpy()
        self.ts_ms[rows] = np.asarray(ts, np.int64)[take]
        amount = np.asarray(table.column("amount").to_numpy(zero_copy_only=False), np.float64)
        self.amount[rows] = amount[take]
        self.bank[rows] = self.banks.encode([banks[i] for i in take.tolist()])
        for name, vocabulary, column in (
            ("card_id", self.cards, self.card),
            ("merchant_id", self.merchants, self.merchant),
            ("country", self.countries, self.country),
        ):
            values = table.column(name).to_pylist()
            column[rows] = vocabulary.encode([values[i] for i in take.tolist()])
        self.has_tx[rows] = True
        self.bank_ids.update(b or "" for b in banks)
        return len(take)

    def add_features(
        self,
        transaction_ids: Sequence[str],
        bank_ids: Sequence[str | None],
        features: np.ndarray,
        scores: np.ndarray,
        model_versions: Sequence[str | None],
        kafka_ms: np.ndarray | int = 0,
    ) -> int:
        """Feature-log records (``scoring.messages.feature_log_records``); returns rows added."""
        n = len(transaction_ids)
        if n == 0:
            return 0
        if features.shape != (n, NUM_FEATURES):
            raise ValueError(f"features must be [{n}, {NUM_FEATURES}], got {features.shape}")
        keys = [row_key(b, t) for b, t in zip(bank_ids, transaction_ids, strict=True)]
        slots, first = self._slots(keys, np.broadcast_to(np.asarray(kafka_ms, np.int64), (n,)))
        fresh = first & ~self.has_features[slots]
        self.duplicate_features += int(n - fresh.sum())
        take = np.flatnonzero(fresh)
        rows = slots[take]
        self.features[rows] = features[take]
        self.score[rows] = np.asarray(scores, np.float64)[take]
        self.version[rows] = self.versions.encode([model_versions[i] for i in take.tolist()])
        self.has_features[rows] = True
        self.bank_ids.update(b or "" for b in bank_ids)
        return len(take)

    def add_labels(self, table: pa.Table) -> None:
        """Decoded labels (``scoring.wire.decode_labels``)."""
        if table.num_rows == 0:
            return
        fraud = table.column("is_fraud").to_pylist()
        reported = table.column("reported_at").cast(TIMESTAMP).cast(pa.int64()).to_pylist()
        ids = table.column("transaction_id").to_pylist()
        banks = table.column("bank_id").to_pylist()
        index = self.index
        for is_fraud, when, transaction_id, bank in zip(fraud, reported, ids, banks, strict=True):
            if not is_fraud:
                self.genuine_labels += 1
                continue
            self.fraud_label_count += 1
            if bank is None:
                earlier = self.fraud_labels_any_bank.get(transaction_id)
                if earlier is None or when < earlier:
                    self.fraud_labels_any_bank[transaction_id] = when
                candidates = [index.get(row_key(b, transaction_id)) for b in self.bank_ids]
            else:
                key = row_key(bank, transaction_id)
                row = index.get(key)
                if row is None:
                    earlier = self.fraud_labels.get(key)
                    if earlier is None or when < earlier:
                        self.fraud_labels[key] = when
                candidates = [row]
            for row in candidates:
                if row is not None and when < self.fraud_ms[row]:
                    self.fraud_ms[row] = when

    # -------------------------------------------------------------------------------- upkeep

    def evict(self, before_ms: int, *, orphans_seen_before_ms: int | None = None) -> int:
        """Forget rows whose transaction happened before ``before_ms`` (event time), labels
        reported before it (their transactions are older still), and rows that never got their
        transaction record whose first record arrived (Kafka time) before
        ``orphans_seen_before_ms``. Returns the rows dropped."""
        n = self.size
        dead = self.has_tx[:n] & (self.ts_ms[:n] < before_ms)
        if orphans_seen_before_ms is not None:
            orphan = ~self.has_tx[:n] & (self.seen_ms[:n] < orphans_seen_before_ms)
            self.evicted_orphans += int(orphan.sum())
            dead |= orphan
        for labels in (self.fraud_labels, self.fraud_labels_any_bank):
            for key in [k for k, when in labels.items() if when < before_ms]:
                del labels[key]
        dropped = int(dead.sum())
        if dropped:
            self._compact(np.flatnonzero(~dead))
        return dropped

    def _compact(self, keep: np.ndarray) -> None:
        for name in self._COLUMNS:
            column = getattr(self, name)
            column[: len(keep)] = column[keep]
        self.keys = [self.keys[i] for i in keep.tolist()]
        self.index = {key: i for i, key in enumerate(self.keys)}
        self.size = len(keep)
        # reset the tail so reused slots start clean
        self.ts_ms[self.size :] = UNKNOWN
        self.fraud_ms[self.size :] = NO_FRAUD
        self.has_tx[self.size :] = False
        self.has_features[self.size :] = False
        if self.capacity > 4 * max(self.size, 4096):  # give memory back after a shrink
            old = {name: getattr(self, name)[: self.size].copy() for name in self._COLUMNS}
            self._alloc(max(2 * self.size, 4096))
            for name, values in old.items():
                getattr(self, name)[: self.size] = values

    # -------------------------------------------------------------------------------- output

    def _joined(self) -> np.ndarray:
        n = self.size
        return self.has_tx[:n] & self.has_features[:n]

    def usable(self, clock_ms: int, maturity_ms: int, start_ms: int | None = None) -> np.ndarray:
        """Rows a model may learn from or be judged on as of ``clock_ms``: joined, and matured
        (transaction at least ``maturity_ms`` before the clock). Younger rows are never used —
        not as negatives (their fraud report may still come), and not as positives either (a
        sample of only the frauds reported early would shift the class balance of recent days).
        """
        n = self.size
        mask = self._joined() & (self.ts_ms[:n] < clock_ms - maturity_ms)
        if start_ms is not None:
            mask &= self.ts_ms[:n] >= start_ms
        return np.flatnonzero(mask)

    def targets(self, rows: np.ndarray, as_of_ms: int) -> np.ndarray:
        """1 where a fraud label reported at or before ``as_of_ms`` exists."""
        return (self.fraud_ms[rows] <= as_of_ms).astype(np.int8)

    def rows(self, rows: np.ndarray, as_of_ms: int) -> RowSet:
        """Copies of ``rows`` in time order, targets as of ``as_of_ms``."""
        rows = rows[np.argsort(self.ts_ms[rows], kind="stable")]
        return RowSet(
            X=self.features[rows].copy(),
            y=self.targets(rows, as_of_ms),
            ts_ms=self.ts_ms[rows].copy(),
            amount=self.amount[rows].copy(),
            bank=self.banks.decode(self.bank[rows]),
            card=self.card[rows].copy(),
            card_id=self.cards.decode(self.card[rows]),
            merchant=self.merchants.decode(self.merchant[rows]),
            country=self.countries.decode(self.country[rows]),
            model_version=self.versions.decode(self.version[rows]),
        )

    def count_usable(self, clock_ms: int, maturity_ms: int, start_ms: int | None) -> int:
        return len(self.usable(clock_ms, maturity_ms, start_ms))

    def counts(self, clock_ms: int, maturity_ms: int) -> WindowCounts:
        joined = self._joined()
        n = self.size
        return WindowCounts(
            joined=int(joined.sum()),
            matured=int((joined & (self.ts_ms[:n] < clock_ms - maturity_ms)).sum()),
            frauds=int((joined & (self.fraud_ms[:n] <= clock_ms)).sum()),
            unjoined=int((~joined).sum()),
        )

    def oldest_ms(self) -> int | None:
        known = self.ts_ms[: self.size][self.has_tx[: self.size]]
        return int(known.min()) if known.size else None
