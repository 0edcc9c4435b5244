"""The feature engine: keys to state slots, events in time order, snapshot and restore.

One engine serves offline replay (training, ``score-log``) and the live stream: both hand it
canonical Arrow batches (see :mod:`scoring.logs`) and it runs the same kernel, so online and offline
features are equal bit for bit. The engine is not thread-safe; a stream worker owns one per
partition set.

Label events carry the keys of the transaction they label (card, bank, merchant, terminal); offline
:func:`label_events` joins them from the log, online the stream enriches them. A label takes effect
at the end of the second it was reported in (:func:`label_effective_ms`).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scoring.features import catalog as cat
from scoring.features import kernels
from scoring.logs import TIMESTAMP

CHANNEL_CODES = {"pos": 0, "ecom": 1, "atm": 2, "moto": 3}
LABEL_EVENT_SCHEMA = pa.schema(
    [
        pa.field("reported_at", TIMESTAMP, nullable=False),
        pa.field("is_fraud", pa.bool_(), nullable=False),
        pa.field("card_id", pa.string()),
        pa.field("bank_id", pa.string()),
        pa.field("merchant_id", pa.string()),
        pa.field("terminal_id", pa.string()),
    ]
)


DEFAULT_MAX_CARDS = 10_000_000  # = ScoringSettings.max_cards (a unit test holds them equal)
CAPACITY_SLACK = 16  # a capacity eviction frees 1/16 of max_cards, so it runs rarely


@dataclass(frozen=True)
class EngineConfig:
    """How much state the engine keeps. Offline (``train``, ``score-log``) and online (the worker)
    must use the same values: both change features (see :meth:`FeatureEngine.process`)."""

    ttl_days: float = 180.0  # state idle longer than this is forgotten (bounded memory)
    initial_capacity: int = 1024
    # Most cards held at once; None: no cap (memory then grows with the cards active in the TTL).
    max_cards: int | None = DEFAULT_MAX_CARDS
    # Reserve the card tables at the cap up front (virtual memory; see FeatureEngine.__init__).
    # Never changes a feature; the stream worker sets it.
    reserve_rows: bool = False

    @property
    def ttl_ms(self) -> int:
        return int(self.ttl_days * cat.DAY_MS)

    @property
    def card_row_limit(self) -> int | None:
        """Rows the card tables may grow to: the cap plus room for the new cards of one second
        (the cap is enforced when a second begins, see :meth:`FeatureEngine.process`)."""
        if self.max_cards is None:
            return None
        return self.max_cards + max(self.max_cards // CAPACITY_SLACK, 1024)

    @property
    def capacity_low_mark(self) -> int:
        """Cards left after a capacity eviction."""
        assert self.max_cards is not None
        return self.max_cards - max(self.max_cards // CAPACITY_SLACK, 1)

    @classmethod
    def from_settings(cls, settings: Any) -> EngineConfig:
        """The configuration of ``scoring.settings.Settings`` (``scoring.max_cards``)."""
        return cls(max_cards=settings.scoring.max_cards)

    def reserved(self) -> EngineConfig:
        """This configuration with the card tables reserved at the cap."""
        return replace(self, reserve_rows=self.max_cards is not None)


def label_effective_ms(reported_ms: np.ndarray) -> np.ndarray:
    """When labels reported at ``reported_ms`` (int64 epoch ms) take effect: the last millisecond
    of their second, (r // BUCKET_MS + 1) * BUCKET_MS - 1.

    A stream worker applies a label when it closes the label's bucket, after every transaction of
    that second, whatever order they arrived in; offline replay follows the same rule. At a tie
    transactions still come first, so a transaction in the label's own second never sees it and
    the first transaction of a later second does. Idempotent: effective times map to themselves.
    """
    bucket = np.asarray(reported_ms, dtype=np.int64) // kernels.BUCKET_MS
    return (bucket + 1) * kernels.BUCKET_MS - 1


def stable_hash(key: str) -> int:
    """A process-independent, non-zero 63-bit hash (Python's hash() is salted per process)."""
    value = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") >> 1
    return value or 1


class KeyIndex:
    """Maps keys (card, merchant or terminal ids) to rows of a state table that grows and reuses
    freed rows. ``hashes[slot]`` is the key's stable hash, used where a card remembers merchants
    (and to break ties when cards are evicted); ``live[slot]`` says whether a key holds the row."""

    def __init__(self, capacity: int, *, row_limit: int | None = None) -> None:
        self.slots: dict[str, int] = {}
        self.keys: list[str | None] = []
        self.free: list[int] = []
        self.hashes = np.zeros(capacity, dtype=np.int64)
        self.live = np.zeros(capacity, dtype=bool)
        self.row_limit = row_limit

    def __len__(self) -> int:
        return len(self.slots)

    def lookup(self, keys: Sequence[str | None], on_new: _Grow) -> np.ndarray:
        """Slots of ``keys`` (-1 for None), allocating rows for keys not seen yet."""
        out = np.empty(len(keys), dtype=np.int64)
        slots = self.slots
        for i, key in enumerate(keys):
            if key is None:
                out[i] = -1
                continue
            slot = slots.get(key)
            if slot is None:
                slot = self._allocate(key, on_new)
            out[i] = slot
        return out

    def _allocate(self, key: str, on_new: _Grow) -> int:
        if self.free:
            slot = self.free.pop()
            self.keys[slot] = key
        else:
            slot = len(self.keys)
            self.keys.append(key)
            if slot >= self.hashes.shape[0]:
                self.hashes = _grown(self.hashes, slot + 1, self.row_limit)
                self.live = _grown(self.live, slot + 1, self.row_limit)
        on_new(slot)
        self.slots[key] = slot
        self.hashes[slot] = stable_hash(key)
        self.live[slot] = True
        return slot

    def release(self, slots: np.ndarray) -> None:
        for slot in slots.tolist():
            key = self.keys[slot]
            if key is not None:
                del self.slots[key]
                self.keys[slot] = None
                self.hashes[slot] = 0
                self.live[slot] = False
                self.free.append(slot)

    def live_slots(self) -> np.ndarray:
        return np.flatnonzero(self.live[: len(self.keys)])


class _Grow:
    """Callback that makes room for a new slot in a pair of state tables and resets its row."""

    def __init__(self, engine: FeatureEngine, which: str) -> None:
        self.engine = engine
        self.which = which

    def __call__(self, slot: int) -> None:
        self.engine._ensure_row(self.which, slot)


def _grown(array: np.ndarray, needed: int, limit: int | None = None) -> np.ndarray:
    """A copy with room for ``needed`` rows: twice the size, but not past ``limit`` (the cap), so
    a capped table never holds (or, while copying, touches) rows it may not use."""
    size = max(2 * array.shape[0], 16)
    if limit is not None:
        size = min(size, limit)
    size = max(size, needed)
    out = np.zeros((size, *array.shape[1:]), dtype=array.dtype)
    out[: array.shape[0]] = array
    return out


class FeatureEngine:
    """Stateful feature computation over time-ordered transactions and label events."""

    feature_names = cat.FEATURE_NAMES

    def __init__(self, config: EngineConfig | None = None, *, pure_python: bool | None = None):
        self.config = config or EngineConfig()
        n = self.config.initial_capacity
        # reserve_rows: the card tables are reserved at the cap once. np.zeros pages cost no
        # memory until a row is first used, and the tables never need a growing copy (which
        # briefly holds old and new: ~2x the card arrays at the moment 10M cards outgrow 8.4M
        # rows). Not the default: code that touches whole arrays (tests comparing engines) would
        # then touch gigabytes.
        n_cards = (self.config.reserve_rows and self.config.card_row_limit) or n
        self.cards = KeyIndex(n_cards, row_limit=self.config.card_row_limit)
        self.merchants = KeyIndex(n)
        self.terminals = KeyIndex(n)
        self.card_f = np.zeros((n_cards, kernels.CARD_F))
        self.card_i = np.zeros((n_cards, kernels.CARD_I), dtype=np.int64)
        self.merchant_f = np.zeros((n, kernels.ENT_F))
        self.merchant_i = np.full((n, kernels.ENT_I), kernels.EMPTY, dtype=np.int64)
        self.terminal_f = np.zeros((n, kernels.ENT_F))
        self.terminal_i = np.full((n, kernels.ENT_I), kernels.EMPTY, dtype=np.int64)
        self._scratch = np.zeros(kernels.RING)
        use_python = kernels.PURE_PYTHON if pure_python is None else pure_python
        self._kernel = kernels.process_events_py if use_python else kernels.process_events_nb
        self._grow_card = _Grow(self, "card")
        self._grow_merchant = _Grow(self, "merchant")
        self._grow_terminal = _Grow(self, "terminal")
        # The engine's event-time clock: the newest second and day it has seen. Upkeep (freeing
        # expired rows each day, capacity evictions) happens when these move, in event time, so
        # online and offline do it at the same points of the event sequence.
        self.clock_bucket = kernels.EMPTY
        self.clock_day = kernels.EMPTY
        # rows freed so far, by (entity, reason): ("card", "ttl"), ("card", "capacity"), ...
        self.evictions: dict[tuple[str, str], int] = {}

    # ------------------------------------------------------------------------------ state rows

    def _ensure_row(self, which: str, slot: int) -> None:
        if which == "card":
            if slot >= self.card_f.shape[0]:
                limit = self.config.card_row_limit
                self.card_f = _grown(self.card_f, slot + 1, limit)
                self.card_i = _grown(self.card_i, slot + 1, limit)
            kernels.reset_card(self.card_f, self.card_i, slot)
        elif which == "merchant":
            if slot >= self.merchant_f.shape[0]:
                self.merchant_f = _grown(self.merchant_f, slot + 1)
                self.merchant_i = _grown(self.merchant_i, slot + 1)
            kernels.reset_entity(self.merchant_f, self.merchant_i, slot)
        else:
            if slot >= self.terminal_f.shape[0]:
                self.terminal_f = _grown(self.terminal_f, slot + 1)
                self.terminal_i = _grown(self.terminal_i, slot + 1)
            kernels.reset_entity(self.terminal_f, self.terminal_i, slot)

    # ----------------------------------------------------------------------------- processing

    def process(self, transactions: pa.Table, labels: pa.Table | None = None) -> np.ndarray:
        """Features of ``transactions`` (rows in input order), interleaving ``labels`` (label
        events, :data:`LABEL_EVENT_SCHEMA`) by time. A label counts at its effective time,
        :func:`label_effective_ms` of its ``reported_at`` (the end of its second). Events are taken
        in time order; at equal times a transaction comes before a label (features see labels
        effective strictly before), and ties keep input order. State carries over to the next
        call, which must hold later events (merchant/terminal state also accepts transactions of
        the current or an earlier second in any order, see :mod:`scoring.features.kernels`).

        Upkeep, in event time, before the first event of a second or a day (UTC) the engine has
        not seen yet: a new day frees the rows of keys idle longer than the TTL
        (:meth:`evict_idle`; never changes a feature); a new second with more than
        ``config.max_cards`` cards held evicts the least recently active cards (last transaction
        or label; ties by key hash) down to ``config.capacity_low_mark``. An evicted card starts
        afresh, as if new, when it comes back: that changes its features, identically online and
        offline, because every card event before the second is applied first in both."""
        n_tx = transactions.num_rows
        labels = labels if labels is not None and labels.num_rows else None
        n_lb = labels.num_rows if labels is not None else 0
        tx_ts = _millis(transactions.column("timestamp"))
        lb_ts = (
            label_effective_ms(_millis(labels.column("reported_at")))
            if labels is not None
            else np.empty(0, dtype=np.int64)
        )
        kind = np.concatenate([np.zeros(n_tx, np.int8), np.ones(n_lb, np.int8)])
        ts = np.concatenate([tx_ts, lb_ts])
        order = np.lexsort((kind, ts))  # by time, transactions first at a tie; stable

        def both(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return np.concatenate([a, b])[order]

        lb_table = labels if labels is not None else LABEL_EVENT_SCHEMA.empty_table()
        events = _Events(
            kind=kind[order],
            ts=ts[order],
            amount=both(_floats(transactions, "amount"), np.zeros(n_lb)),
            country=both(_country_codes(transactions), np.zeros(n_lb, np.int64)),
            channel=both(_channel_codes(transactions), np.full(n_lb, -1, np.int64)),
            mcc=both(_mcc_codes(transactions), np.full(n_lb, -1, np.int64)),
            card_present=both(
                _bools(transactions, "card_present", default=-1), np.zeros(n_lb, np.int8)
            ),
            is_fraud=both(
                np.zeros(n_tx, np.int8),
                _bools(labels, "is_fraud", default=0)
                if labels is not None
                else np.zeros(0, np.int8),
            ),
            out_row=both(np.arange(n_tx, dtype=np.int64), np.full(n_lb, -1, np.int64)),
            card=_sorted_keys(_card_keys(transactions), _card_keys(lb_table), order),
            merchant=_sorted_keys(
                _text(transactions, "merchant_id"), _text(lb_table, "merchant_id"), order
            ),
            terminal=_sorted_keys(
                _text(transactions, "terminal_id"), _text(lb_table, "terminal_id"), order
            ),
        )
        out = np.empty((n_tx, cat.NUM_FEATURES), dtype=np.float64)
        bucket = events.ts // kernels.BUCKET_MS
        day = events.ts // cat.DAY_MS
        start, n = 0, len(order)
        while start < n:
            if day[start] > self.clock_day:
                if self.clock_day != kernels.EMPTY:
                    self._free_expired(int(day[start]) * cat.DAY_MS)
                self.clock_day = int(day[start])
            if bucket[start] > self.clock_bucket:
                self.clock_bucket = int(bucket[start])
                self._enforce_capacity()
            # up to the next day, or the next second at which the cap would be exceeded
            stop = int(np.searchsorted(day, self.clock_day + 1, side="left"))
            stop = self._capacity_stop(events.card, bucket, start, stop)
            self._run(events, start, stop, out)
            self.clock_bucket = max(self.clock_bucket, int(bucket[stop - 1]))
            start = stop
        return out

    def _run(self, events: _Events, start: int, stop: int, out: np.ndarray) -> None:
        """The kernel over events[start:stop] (time-ordered)."""
        part = slice(start, stop)
        card = self._lookup_unique(
            self.cards, events.card.slice(start, stop - start), self._grow_card
        )
        merchant = self._lookup_unique(
            self.merchants, events.merchant.slice(start, stop - start), self._grow_merchant
        )
        terminal = self._lookup_unique(
            self.terminals, events.terminal.slice(start, stop - start), self._grow_terminal
        )
        self._kernel(
            events.kind[part],
            events.ts[part],
            events.amount[part],
            card,
            merchant,
            terminal,
            _hashes(self.merchants, merchant),
            _hashes(self.terminals, terminal),
            events.country[part],
            events.channel[part],
            events.mcc[part],
            events.card_present[part],
            events.is_fraud[part],
            events.out_row[part],
            self.card_f,
            self.card_i,
            self.merchant_f,
            self.merchant_i,
            self.terminal_f,
            self.terminal_i,
            self.config.ttl_ms,
            self._scratch,
            out,
        )

    def _capacity_stop(self, cards: pa.Array, bucket: np.ndarray, start: int, stop: int) -> int:
        """The first second-boundary in (start, stop) at which more than ``max_cards`` cards would
        be held (new cards of the events before it counted), or ``stop``."""
        cap = self.config.max_cards
        if cap is None:
            return stop
        keys = cards.slice(start, stop - start).dictionary_encode()
        if len(self.cards) + len(keys.dictionary) <= cap:  # the usual case: cannot be reached
            return stop
        slots = self.cards.slots
        is_new = np.fromiter(
            (k is not None and k not in slots for k in keys.dictionary.to_pylist()),
            dtype=bool,
            count=len(keys.dictionary),
        )
        codes = pc.fill_null(keys.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        valid = codes >= 0
        first_new = np.zeros(len(codes), dtype=np.int64)  # 1 where a new card first appears
        uniques, first = np.unique(codes[valid], return_index=True)
        positions = np.flatnonzero(valid)[first[is_new[uniques]]]
        first_new[positions] = 1
        held_before = len(self.cards) + np.concatenate([[0], np.cumsum(first_new)[:-1]])
        window = bucket[start:stop]
        boundary = np.zeros(len(window), dtype=bool)
        boundary[1:] = window[1:] > np.maximum(window[:-1], self.clock_bucket)
        over = np.flatnonzero(boundary & (held_before > cap))
        return start + int(over[0]) if over.size else stop

    def _enforce_capacity(self) -> None:
        cap = self.config.max_cards
        if cap is None or len(self.cards) <= cap:
            return
        live = self.cards.live_slots()
        last = np.maximum(
            self.card_i[live, kernels.CI_LAST_TS], self.card_i[live, kernels.CI_LABEL_AS_OF]
        )
        k = len(live) - self.config.capacity_low_mark
        # the k least recently active; among cards at the threshold, the lowest key hashes
        threshold = np.partition(last, k - 1)[k - 1]
        older = live[last < threshold]
        tied = live[last == threshold]
        tied = tied[np.argsort(self.cards.hashes[tied], kind="stable")][: k - older.size]
        self._release("card", "capacity", self.cards, np.concatenate([older, tied]))

    def _release(self, entity: str, reason: str, index: KeyIndex, slots: np.ndarray) -> None:
        index.release(slots)
        key = (entity, reason)
        self.evictions[key] = self.evictions.get(key, 0) + int(slots.size)

    @staticmethod
    def _lookup_unique(index: KeyIndex, keys: pa.Array, grow: _Grow) -> np.ndarray:
        """Python touches each distinct key once per call; rows map through Arrow's dictionary."""
        if len(keys) == 0:
            return np.empty(0, dtype=np.int64)
        encoded = keys.dictionary_encode()
        unique_slots = index.lookup(encoded.dictionary.to_pylist(), grow)
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        valid = ~np.asarray(encoded.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        out = np.full(len(keys), -1, dtype=np.int64)
        out[valid] = unique_slots[codes[valid].astype(np.int64)]
        return out

    # --------------------------------------------------------------------------- maintenance

    def evict_idle(self, now_ms: int) -> int:
        """Free the rows of keys idle for longer than the TTL. Features never change by it: the
        kernel resets such rows on their next use anyway. Returns how many rows were freed.

        :meth:`process` does this itself at the start of every event-time day; calling it at
        other times frees memory sooner but moves the card count, and so when a capacity
        eviction happens: a worker that must match offline replay leaves it to the engine."""
        ttl = self.config.ttl_ms
        freed = 0
        bucket_start = now_ms // kernels.BUCKET_MS * kernels.BUCKET_MS
        tables = (
            ("card", self.cards, self.card_i, (kernels.CI_LAST_TS, kernels.CI_LABEL_AS_OF), now_ms),
            # the kernel expires merchants and terminals at the start of an event's bucket
            ("merchant", self.merchants, self.merchant_i, (kernels.EI_LAST_TS,), bucket_start),
            ("terminal", self.terminals, self.terminal_i, (kernels.EI_LAST_TS,), bucket_start),
        )
        for entity, index, state_i, columns, now in tables:
            live = index.live_slots()
            last = state_i[live, columns[0]]
            for column in columns[1:]:
                last = np.maximum(last, state_i[live, column])
            stale = live[now - last > ttl]
            self._release(entity, "ttl", index, stale)
            freed += stale.size
        return freed

    def _free_expired(self, day_start_ms: int) -> None:
        self.evict_idle(day_start_ms)

    def memory_bytes(self) -> int:
        """Bytes of the state arrays' rows in use: every row ever handed out (held now or free for
        reuse). Reserved rows never used take no memory and are not counted. The key maps
        (Python dicts of the ids) come on top: benchmarks/README.md, "State memory"."""
        total = 0
        for index, arrays in (
            (self.cards, (self.card_f, self.card_i)),
            (self.merchants, (self.merchant_f, self.merchant_i)),
            (self.terminals, (self.terminal_f, self.terminal_i)),
        ):
            rows = len(index.keys)
            row_bytes = sum(a[:1].nbytes for a in arrays) + index.hashes.itemsize + 1
            total += rows * row_bytes
        return total

    # ------------------------------------------------------------------------ snapshot/restore

    def snapshot(self) -> bytes:
        """Exact state as bytes (numpy .npz): arrays plus the key maps."""
        return self.capture()()

    def capture(self) -> Callable[[], bytes]:
        """The state as of now, copied, and a function that turns the copy into
        :meth:`snapshot`'s bytes later, on another thread if need be.

        Why split: the worker checkpoints between batches, and serialising there (``np.savez``
        of the arrays, JSON of every card, merchant and terminal key) stopped its loop for
        ~100-200 ms at 20k cards, a deadline miss for every transaction in flight. The copy
        taken here is memory copies only: the arrays' rows in use and the key lists.
        """
        used = {
            name: len(index.keys)
            for name, index in (
                ("card", self.cards),
                ("merchant", self.merchants),
                ("terminal", self.terminals),
            )
        }
        arrays = {  # rows in use only: the reserved rest is zeros
            "card_f": self.card_f[: used["card"]].copy(),
            "card_i": self.card_i[: used["card"]].copy(),
            "merchant_f": self.merchant_f[: used["merchant"]].copy(),
            "merchant_i": self.merchant_i[: used["merchant"]].copy(),
            "terminal_f": self.terminal_f[: used["terminal"]].copy(),
            "terminal_i": self.terminal_i[: used["terminal"]].copy(),
        }
        meta = {
            "ttl_days": self.config.ttl_days,
            "max_cards": self.config.max_cards,
            "clock_bucket": self.clock_bucket,
            "clock_day": self.clock_day,
            "evictions": [[e, r, n] for (e, r), n in sorted(self.evictions.items())],
            "keys": {
                name: {"keys": list(index.keys), "free": list(index.free)}
                for name, index in (
                    ("cards", self.cards),
                    ("merchants", self.merchants),
                    ("terminals", self.terminals),
                )
            },
        }

        def serialise() -> bytes:
            buffer = io.BytesIO()
            encoded = np.frombuffer(dumps_yielding(meta).encode(), np.uint8)
            np.savez(buffer, **arrays, meta=encoded)  # type: ignore[arg-type]
            return buffer.getvalue()

        return serialise

    @classmethod
    def restore(
        cls,
        data: bytes,
        *,
        pure_python: bool | None = None,
        config: EngineConfig | None = None,
    ) -> FeatureEngine:
        """The engine :meth:`snapshot` saved; ``config`` replaces the saved configuration (a
        worker restarted with another ``max_cards`` applies it from the next second on)."""
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            meta = json.loads(arrays["meta"].tobytes())
            if config is None:
                config = EngineConfig(
                    ttl_days=meta["ttl_days"], max_cards=meta.get("max_cards", DEFAULT_MAX_CARDS)
                )
            engine = cls(config, pure_python=pure_python)
            for name in ("card_f", "card_i", "merchant_f", "merchant_i", "terminal_f",
                         "terminal_i"):  # fmt: skip
                saved = arrays[name]
                table = getattr(engine, name)
                if saved.shape[0] > table.shape[0]:
                    table = _grown(table, saved.shape[0])
                table[: saved.shape[0]] = saved
                setattr(engine, name, table)
        engine.clock_bucket = meta.get("clock_bucket", kernels.EMPTY)
        engine.clock_day = meta.get("clock_day", kernels.EMPTY)
        engine.evictions = {(e, r): n for e, r, n in meta.get("evictions", [])}
        for name in ("cards", "merchants", "terminals"):
            index = KeyIndex(1, row_limit=config.card_row_limit if name == "cards" else None)
            index.keys = meta["keys"][name]["keys"]
            index.free = meta["keys"][name]["free"]
            index.slots = {k: i for i, k in enumerate(index.keys) if k is not None}
            rows = max(len(index.keys), getattr(engine, f"{name[:-1]}_f").shape[0])
            index.hashes = np.zeros(rows, dtype=np.int64)
            index.live = np.zeros(rows, dtype=bool)
            for slot, key in enumerate(index.keys):
                if key is not None:
                    index.hashes[slot] = stable_hash(key)
                    index.live[slot] = True
            setattr(engine, name, index)
        return engine

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.snapshot())

    @classmethod
    def load(cls, path: str | Path) -> FeatureEngine:
        return cls.restore(Path(path).read_bytes())


@dataclass(frozen=True)
class _Events:
    """Transactions and label events of one :meth:`FeatureEngine.process` call, in time order."""

    kind: np.ndarray
    ts: np.ndarray
    amount: np.ndarray
    country: np.ndarray
    channel: np.ndarray
    mcc: np.ndarray
    card_present: np.ndarray
    is_fraud: np.ndarray
    out_row: np.ndarray
    card: pa.Array  # keys, still text: rows are assigned per segment, after any eviction
    merchant: pa.Array
    terminal: pa.Array


# ------------------------------------------------------------------------------ column helpers


def _sorted_keys(tx: pa.Array, lb: pa.Array, order: np.ndarray) -> pa.Array:
    keys = pa.concat_arrays([tx, lb]) if len(lb) else tx
    return keys.take(pa.array(order))


def _text(table: pa.Table, name: str) -> pa.Array:
    if name not in table.column_names:
        return pa.nulls(table.num_rows, pa.string())
    return table.column(name).combine_chunks().cast(pa.string())


def _bank_scoped(banks: pa.Array, ids: pa.Array) -> pa.Array:
    """ "<bank>\x1f<id>", or the id alone where no bank is given."""
    if banks.null_count == len(banks):
        return ids
    return pc.if_else(pc.is_null(banks), ids, pc.binary_join_element_wise(banks, ids, "\x1f"))


def _card_keys(table: pa.Table) -> pa.Array:
    """Card state is per bank: two banks' card tokens never share state."""
    return _bank_scoped(_text(table, "bank_id"), _text(table, "card_id"))


def _millis(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(column.cast(TIMESTAMP).cast(pa.int64()).to_numpy(), dtype=np.int64)


def _floats(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(), dtype=np.float64)


def _bools(table: pa.Table, name: str, *, default: int) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, default, dtype=np.int8)
    column = pc.cast(table.column(name), pa.int8())
    return np.asarray(pc.fill_null(column, default).to_numpy(), dtype=np.int8)


def _hashes(index: KeyIndex, slots: np.ndarray) -> np.ndarray:
    return np.where(slots >= 0, index.hashes[np.maximum(slots, 0)], 0).astype(np.int64)


def _codes(table: pa.Table, name: str, encode: dict[str, int] | None, absent: int) -> np.ndarray:
    """Per-row integer codes of a low-cardinality text column, computed once per distinct value."""
    if name not in table.column_names:
        return np.full(table.num_rows, absent, dtype=np.int64)
    encoded = table.column(name).combine_chunks().dictionary_encode()
    values = encoded.dictionary.to_pylist()
    if encode is not None:
        lookup = np.array([encode.get(v, absent) for v in values] + [absent], dtype=np.int64)
    elif name == "country":
        lookup = np.array([_country_code(v) for v in values] + [absent], dtype=np.int64)
    else:  # mcc
        lookup = np.array([int(v) if v.isdigit() else absent for v in values] + [absent], np.int64)
    codes = pc.fill_null(encoded.indices, len(values)).to_numpy(zero_copy_only=False)
    return lookup[codes.astype(np.int64)]


def _country_code(value: str) -> int:
    return (ord(value[0]) - 64) * 32 + (ord(value[1]) - 64) if len(value) == 2 else 0


def _country_codes(table: pa.Table) -> np.ndarray:
    return _codes(table, "country", None, 0)


def _channel_codes(table: pa.Table) -> np.ndarray:
    return _codes(table, "channel", CHANNEL_CODES, -1)


def _mcc_codes(table: pa.Table) -> np.ndarray:
    return _codes(table, "mcc", None, -1)


# ------------------------------------------------------------------------------ offline replay


def label_events(transactions: pa.Table, labels: pa.Table) -> pa.Table:
    """Labels joined with the keys of the transactions they label (LABEL_EVENT_SCHEMA).

    A label names its bank when it has one; a label without bank_id matches the transaction_id in
    any bank. Labels of unknown transactions cannot update any state and are dropped."""
    # A hash lookup of each label's transaction (Arrow's index_in), ~10x faster than a join here.
    tx_ids = _text(transactions, "transaction_id")

    def _scoped_tx_ids() -> pa.Array:
        return _bank_scoped(_text(transactions, "bank_id"), tx_ids)

    label_ids = _text(labels, "transaction_id")
    label_banks = _text(labels, "bank_id")
    if label_banks.null_count == len(label_banks):  # no label names a bank
        row = pc.index_in(label_ids, value_set=tx_ids)
    elif label_banks.null_count == 0:  # every label names its bank
        row = pc.index_in(_bank_scoped(label_banks, label_ids), value_set=_scoped_tx_ids())
    else:
        by_key = pc.index_in(_bank_scoped(label_banks, label_ids), value_set=_scoped_tx_ids())
        by_id = pc.index_in(label_ids, value_set=tx_ids)
        row = pc.if_else(pc.is_null(label_banks), by_id, by_key)
    found = pc.is_valid(row)
    row = row.filter(found)
    picked = transactions.select(["bank_id", "card_id", "merchant_id", "terminal_id"]).take(row)
    joined = pa.table(
        {
            "reported_at": labels.column("reported_at").filter(found),
            "is_fraud": labels.column("is_fraud").filter(found),
            "transaction_id": label_ids.filter(found),
            "tx_bank_id": picked.column("bank_id"),
            "card_id": picked.column("card_id"),
            "merchant_id": picked.column("merchant_id"),
            "terminal_id": picked.column("terminal_id"),
        }
    )
    # The join does not keep order; report time then transaction id makes it deterministic.
    joined = joined.sort_by([("reported_at", "ascending"), ("transaction_id", "ascending")])
    return pa.table(
        {
            "reported_at": joined.column("reported_at"),
            "is_fraud": joined.column("is_fraud"),
            "card_id": joined.column("card_id"),
            "bank_id": joined.column("tx_bank_id"),
            "merchant_id": joined.column("merchant_id"),
            "terminal_id": joined.column("terminal_id"),
        },
        schema=LABEL_EVENT_SCHEMA,
    )


def replay_log(
    transactions: pa.Table,
    labels: pa.Table | None = None,
    *,
    engine: FeatureEngine | None = None,
    chunk_rows: int = 1_000_000,
) -> np.ndarray:
    """Point-in-time features for every transaction of a log (rows in the log's order).

    The log is replayed from its start in time order, labels applied at the end of the second of
    their ``reported_at`` (:func:`label_effective_ms`). Chunks bound memory; they do not change
    the result."""
    engine = engine or FeatureEngine()
    ts = _millis(transactions.column("timestamp"))
    in_order = bool(np.all(ts[1:] >= ts[:-1]))  # logs usually are: then no gather or scatter
    order = np.arange(len(ts)) if in_order else np.argsort(ts, kind="stable")
    events = label_events(transactions, labels) if labels is not None else None
    label_ts = (  # effective times, sorted since the events are sorted by reported_at
        label_effective_ms(_millis(events.column("reported_at")))
        if events is not None
        else np.empty(0, np.int64)
    )
    out = np.empty((transactions.num_rows, cat.NUM_FEATURES), dtype=np.float64)
    start = 0
    label_start = 0
    while start < len(order):
        stop = min(start + chunk_rows, len(order))
        # extend the chunk to the end of a run of equal timestamps, so ties stay in one call
        while stop < len(order) and ts[order[stop]] == ts[order[stop - 1]]:
            stop += 1
        rows = order[start:stop]
        # Labels effective before the next chunk's first transaction belong here; one effective at
        # exactly that time waits for it (transactions come first at a tie).
        if stop < len(order):
            label_stop = int(np.searchsorted(label_ts, ts[order[stop]], side="left"))
        else:
            label_stop = len(label_ts)
        chunk_labels = events.slice(label_start, label_stop - label_start) if events else None
        if in_order:
            out[start:stop] = engine.process(transactions.slice(start, stop - start), chunk_labels)
        else:
            out[rows] = engine.process(transactions.take(pa.array(rows)), chunk_labels)
        start, label_start = stop, label_stop
    return out


JSON_SLICE = 4096  # list items per GIL-holding json.dumps call in dumps_yielding


def dumps_yielding(value: object) -> str:
    """``json.dumps(value)``, the same text, with long lists encoded a slice at a time and the GIL
    handed to a waiting thread between slices. A checkpoint is serialised on the worker's writer
    thread; one json.dumps of every card key holds the GIL throughout (~10 ms per 160k keys, so
    ~100 ms at 1M cards) and stops the worker's loop for that long."""
    if isinstance(value, dict):
        items = (f"{json.dumps(key)}: {dumps_yielding(item)}" for key, item in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list) and len(value) > JSON_SLICE:
        parts = []
        for start in range(0, len(value), JSON_SLICE):
            parts.append(json.dumps(value[start : start + JSON_SLICE])[1:-1])
            time.sleep(0)
        return "[" + ", ".join(parts) + "]"
    return json.dumps(value)
