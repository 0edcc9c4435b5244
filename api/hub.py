"""The decisions one API replica knows, the requests waiting for one, and the review queue.

Everything here runs on the asyncio loop (one thread): the Kafka threads hand over what they read
with ``loop.call_soon_threadsafe`` (:mod:`api.stream`), so no lock is needed.

A request for (bank, transaction_id) becomes an :class:`Entry`. The transaction goes to the stream
and a timer is set at the bank's deadline; whichever comes first answers every request waiting on
the entry: the stream's decision (read from ``decisions``), or the bank's fallback
(:mod:`api.fallback`, ``degraded: true``). A stream decision that arrives after a fallback answer is
kept beside it (``stream_decision``). Decisions of transactions this replica never saw (sent by
another replica, or straight to Kafka) are stored too, so any replica can answer
``GET /v1/decisions/{id}`` and idempotent resends for recent transactions.

Idempotency: the entry keeps the normalised transaction it produced. The same id with the same
normalised body gets the entry's decision (awaited if still in flight: concurrent duplicates produce
one Kafka message and share one answer); a different body is a :class:`ConflictError`.

Memory is bounded: entries older than ``api.decision_window_s`` or beyond
``api.max_stored_decisions`` are forgotten, oldest first (never while a request waits on them).

Garbage collection: an answered entry is kept as a plain tuple of strings, bytes and numbers
(:class:`Settled` is its named view), which CPython stops tracking for cyclic garbage collection.
Kept as objects, the up to 100k stored entries were walked by every full collection: 20-80 ms
stalls of the event loop, several a minute at 500 requests/s (benchmarks/api_load.py's probe).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

import orjson

from api.fallback import fallback_decision
from api.metrics import ApiMetrics
from api.schemas import TransactionIn, parse_timestamp, rfc3339_ms
from scoring.decision import DecisionPolicy

log = logging.getLogger("fraudstream.api")

Key = tuple[str, str]  # (bank_id, transaction_id)

# The order of scoring.logs.TRANSACTION_SCHEMA, so the JSON equals scoring.wire's byte for byte.
WIRE_FIELDS = (
    "transaction_id",
    "card_id",
    "timestamp",
    "amount",
    "bank_id",
    "currency",
    "merchant_id",
    "terminal_id",
    "mcc",
    "country",
    "channel",
    "card_present",
    "customer_id",
)


def transaction_json(transaction: TransactionIn, bank_id: str) -> bytes:
    """The Kafka value for ``transaction`` (as :func:`scoring.wire.encode_transactions` writes it),
    with the caller's bank. Normalised: timestamps in UTC to the millisecond, absent fields left
    out — so two bodies that mean the same transaction give the same bytes."""
    values = transaction.model_dump()
    values["bank_id"] = bank_id
    values["timestamp"] = rfc3339_ms(parse_timestamp(transaction.timestamp))
    return compact(orjson.dumps({k: values[k] for k in WIRE_FIELDS if values.get(k) is not None}))


def compact(value: bytes) -> bytes:
    """An exact-size copy of bytes that will be kept for long.

    orjson returns bytes in a larger allocation (measured: ~4 KB of resident memory per 200-byte
    result); the store keeps ~10⁵ of them, so it keeps exact copies instead (~30 bytes overhead).
    """
    return bytes(memoryview(value))


class ConflictError(Exception):
    """The transaction id was already sent by this bank with a different body."""

    def __init__(self, transaction_id: str, fields: Sequence[str]) -> None:
        self.transaction_id = transaction_id
        self.fields = list(fields)
        differ = ", ".join(self.fields) or "the body"
        super().__init__(
            f"transaction_id {transaction_id!r} was already sent with a different body "
            f"({differ} differ). Resend the original body to get its decision, or use a new "
            "transaction_id."
        )


class ReviewConflictError(Exception):
    pass


class StreamDecision(NamedTuple):
    """One record of ``decisions``, as the Kafka thread hands it over."""

    bank_id: str
    transaction_id: str
    action: str
    decided_at: str
    value: bytes
    at: float  # the record's Kafka timestamp, Unix seconds


class AnalystVerdict(NamedTuple):
    """One analyst label read from ``labels``."""

    bank_id: str
    transaction_id: str
    is_fraud: bool
    label: dict[str, Any]


class Link(Protocol):
    """The Kafka side as the hub needs it (api.stream.KafkaLink; fakes in the tests)."""

    def send_transaction(self, key: bytes, value: bytes, on_failed: Callable[[str], None]) -> None:
        """Produce without waiting; ``on_failed`` is called on the loop if delivery fails."""

    async def send_label(self, key: bytes, value: bytes) -> None:
        """Produce and wait until the broker has it (acks=all)."""


@dataclass(slots=True, eq=False)
class Entry:
    """A transaction a request is waiting for (then it becomes :class:`Settled`)."""

    bank_id: str
    transaction_id: str
    request: bytes | None  # the normalised transaction produced; None: learned from the stream
    stored_at: float  # Unix time, for the window
    started: float = 0.0  # loop.time() when the request arrived
    answer: asyncio.Future[bytes] | None = None  # set while a request waits
    timer: asyncio.TimerHandle | None = None
    told: bytes | None = None  # the decision the bank was told (JSON)
    stream: bytes | None = None  # the stream's decision (JSON), when it arrived
    degraded: bool = False

    @property
    def in_flight(self) -> bool:
        return self.told is None


class Settled(NamedTuple):
    """An answered entry. Stored as ``tuple(settled)``: a plain tuple of atomic values is
    untracked by the garbage collector, a NamedTuple (a subclass) is not."""

    bank_id: str
    transaction_id: str
    request: bytes | None  # as in Entry
    stored_at: float
    told: bytes  # the decision the bank was told (JSON)
    stream: bytes | None  # the stream's decision (JSON), when it arrived
    degraded: bool

    @property
    def in_flight(self) -> bool:
        return False


Stored = Entry | tuple[Any, ...]  # what the hub keeps per key: waiting, or a plain Settled tuple


def _view(stored: Stored) -> Entry | Settled:
    return stored if isinstance(stored, Entry) else Settled._make(stored)


@dataclass
class ReviewQueue:
    """Per bank, the stream's ``review`` decisions without an analyst verdict, oldest first.

    Sort keys are ``<decided_at in µs, 16 digits>|<transaction_id>`` strings: the same on every
    replica, so a page cursor (the last key) works on any of them, and any string is a valid cursor.
    """

    max_items: int
    _keys: dict[str, list[str]] = field(default_factory=dict)  # bank -> sorted sort keys
    _pending: OrderedDict[Key, tuple[str, bytes]] = field(default_factory=OrderedDict)
    _verdicts: OrderedDict[Key, AnalystVerdict] = field(default_factory=OrderedDict)

    def add(self, bank_id: str, transaction_id: str, decided_at: str, value: bytes) -> None:
        key = (bank_id, transaction_id)
        if key in self._pending or key in self._verdicts:
            return
        sort_key = f"{_micros(decided_at):016d}|{transaction_id}"
        bisect.insort(self._keys.setdefault(bank_id, []), sort_key)
        self._pending[key] = (sort_key, value)
        while len(self._pending) > self.max_items:
            oldest = next(iter(self._pending))
            self._drop(oldest)

    def pending(self, key: Key) -> bool:
        return key in self._pending

    def page(
        self, bank_id: str, cursor: str | None, limit: int
    ) -> tuple[list[tuple[str, bytes, str]], str | None]:
        """(transaction_id, decision JSON, sort key) of the bank's items after ``cursor``, and the
        cursor of the next page (None at the end)."""
        keys = self._keys.get(bank_id, [])
        start = bisect.bisect_right(keys, cursor) if cursor is not None else 0
        chosen = keys[start : start + limit]
        items = []
        for sort_key in chosen:
            transaction_id = sort_key.split("|", 1)[1]
            items.append((transaction_id, self._pending[(bank_id, transaction_id)][1], sort_key))
        more = start + limit < len(keys)
        return items, (chosen[-1] if more and chosen else None)

    def verdict(self, key: Key) -> AnalystVerdict | None:
        return self._verdicts.get(key)

    def record(self, verdict: AnalystVerdict) -> None:
        key = (verdict.bank_id, verdict.transaction_id)
        if key in self._pending:
            self._drop(key)
        self._verdicts[key] = verdict
        self._verdicts.move_to_end(key)
        while len(self._verdicts) > self.max_items:
            self._verdicts.popitem(last=False)

    def _drop(self, key: Key) -> None:
        sort_key, _value = self._pending.pop(key)
        keys = self._keys[key[0]]
        del keys[bisect.bisect_left(keys, sort_key)]
        if not keys:
            del self._keys[key[0]]

    def __len__(self) -> int:
        return len(self._pending)


def _micros(decided_at: str) -> int:
    try:
        return max(int(datetime.fromisoformat(decided_at).timestamp() * 1_000_000), 0)
    except (ValueError, TypeError, OverflowError):
        return 0


@dataclass(frozen=True)
class HubLimits:
    default_deadline_ms: float
    window_s: float
    max_entries: int
    max_reviews: int
    cpu_second_usd: float
    deadline_margin_ms: float = 0.0  # the fallback fires this long before the deadline


class DecisionHub:
    def __init__(
        self,
        policy: DecisionPolicy,
        limits: HubLimits,
        metrics: ApiMetrics,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.limits = limits
        self.metrics = metrics
        self.reviews = ReviewQueue(limits.max_reviews)
        self._entries: OrderedDict[Key, Stored] = OrderedDict()
        self._reviewing: dict[Key, asyncio.Task[dict[str, Any]]] = {}
        self._wall = wall_clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._link: Link | None = None

    def bind(self, loop: asyncio.AbstractEventLoop, link: Link) -> None:
        self._loop = loop
        self._link = link

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "DecisionHub.bind() first (the app's lifespan does)"
        return self._loop

    def deadline_s(self, bank_id: str) -> float:
        bank = self.policy.for_bank(bank_id)
        if bank.deadline_ms is not None:
            return bank.deadline_ms / 1000.0
        return self.limits.default_deadline_ms / 1000.0

    def __len__(self) -> int:
        return len(self._entries)

    # ------------------------------------------------------------------------------- requests

    def submit_many(
        self, bank_id: str, transactions: Sequence[TransactionIn], started: float
    ) -> list[tuple[asyncio.Future[bytes], bool]]:
        """Send each transaction (or join its earlier request); per transaction the future of its
        decision and whether it was already known (an idempotent replay).

        All or nothing: if any transaction conflicts with an earlier one of the same id (or with
        another of the batch), :class:`ConflictError` is raised before anything is sent.
        ``started`` is ``loop.time()`` when the request arrived: the deadline counts from it.
        """
        values = [transaction_json(t, bank_id) for t in transactions]
        seen: dict[str, bytes] = {}
        for transaction, value in zip(transactions, values, strict=True):
            tx_id = transaction.transaction_id
            entry = self._get((bank_id, tx_id))
            earlier = seen.get(tx_id) or (entry.request if entry is not None else None)
            if earlier is not None and earlier != value:
                raise ConflictError(tx_id, _differing_fields(earlier, value))
            seen[tx_id] = value
        return [
            self._submit(bank_id, t, value, started)
            for t, value in zip(transactions, values, strict=True)
        ]

    def _submit(
        self, bank_id: str, transaction: TransactionIn, value: bytes, started: float
    ) -> tuple[asyncio.Future[bytes], bool]:
        loop = self.loop
        key = (bank_id, transaction.transaction_id)
        known = self._get(key)
        if known is not None:
            if known.told is not None:
                done: asyncio.Future[bytes] = loop.create_future()
                done.set_result(known.told)
                return done, True
            assert isinstance(known, Entry) and known.answer is not None
            return known.answer, True
        entry = Entry(bank_id, transaction.transaction_id, value, self._wall(), started)
        answer = entry.answer = loop.create_future()
        self._insert(key, entry)
        fires = started + max(self.deadline_s(bank_id) - self.limits.deadline_margin_ms / 1000, 0)
        entry.timer = loop.call_at(fires, self._deadline, entry)
        assert self._link is not None
        try:
            self._link.send_transaction(
                transaction.card_id.encode(), value, lambda why: self._send_failed(entry, why)
            )
        except Exception as exc:  # a full local queue, a closed producer: answer now
            self._send_failed(entry, f"{type(exc).__name__}: {exc}")
        return answer, False

    def _send_failed(self, entry: Entry, why: str) -> None:
        log.warning(
            "transaction of bank %s not delivered to the stream (%s); the fallback decides",
            entry.bank_id,
            why,
        )
        self._deadline(entry)

    def _deadline(self, entry: Entry) -> None:
        """The deadline passed (or the transaction could not be sent): the fallback decides."""
        if not entry.in_flight or entry.request is None:
            return
        record = fallback_decision(
            orjson.loads(entry.request),
            entry.bank_id,
            self.policy,
            latency_ms=max(self.loop.time() - entry.started, 0.0) * 1000.0,
            cpu_second_usd=self.limits.cpu_second_usd,
        )
        self.metrics.count_fallback(entry.bank_id, record)
        self._answer(entry, compact(orjson.dumps(record)), degraded=True)

    def _answer(self, entry: Entry, told: bytes, *, degraded: bool) -> None:
        entry.told = told  # what a timer or callback still holding the entry will see
        entry.degraded = degraded
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        if entry.answer is not None:
            if not entry.answer.done():
                entry.answer.set_result(told)
            entry.answer = None
        key = (entry.bank_id, entry.transaction_id)
        if self._entries.get(key) is entry:  # (in flight: never evicted; a test may clear)
            self._entries[key] = tuple(
                Settled(
                    entry.bank_id,
                    entry.transaction_id,
                    entry.request,
                    entry.stored_at,
                    told,
                    entry.stream,
                    degraded,
                )
            )
        self.metrics.observe_answer(told)

    # ---------------------------------------------------------------------- what Kafka says

    def on_stream_decisions(self, decisions: Iterable[StreamDecision]) -> None:
        """Decisions read from ``decisions`` (called on the loop by the Kafka thread)."""
        now = time.time()
        for d in decisions:
            key = (d.bank_id, d.transaction_id)
            entry = self._get(key)
            if entry is None:
                learned = Settled(d.bank_id, d.transaction_id, None, d.at, d.value, d.value, False)
                self._insert(key, tuple(learned))
            elif isinstance(entry, Entry):  # in flight
                entry.stream = d.value
                # Clocks of two hosts in production: skew shows here (clamped at 0).
                self.metrics.decision_transport.observe(max(now - d.at, 0.0))
                self._answer(entry, d.value, degraded=False)
            elif entry.stream is None:
                # after the deadline: kept beside the fallback answer
                self._entries[key] = tuple(entry._replace(stream=d.value))
            elif entry.stream != d.value:
                self._supersede(key, entry, d)
            if d.action == "review":
                self.reviews.add(d.bank_id, d.transaction_id, d.decided_at, d.value)

    def _supersede(self, key: Key, entry: Settled, d: StreamDecision) -> None:
        """A second decision for a transaction: with read_uncommitted the API can read a decision
        whose Kafka transaction then aborts; the worker recomputes it after restoring its state,
        so the later record is the committed one (docs/api.md, "Answering before the commit").
        It replaces the stored stream decision; what this replica told the bank stays as told."""
        told_action = _action(entry.told)
        changed = not entry.degraded and told_action != d.action
        if entry.request is None:
            entry = entry._replace(told=d.value)  # learned from the stream: told nobody
            changed = False
        self._entries[key] = tuple(entry._replace(stream=d.value))
        self.metrics.superseded.labels(
            bank=d.bank_id, action_changed="true" if changed else "false"
        ).inc()
        if changed:
            log.warning(
                "bank %s was told %s for a transaction whose committed decision is %s "
                "(its first Kafka transaction aborted)",
                d.bank_id,
                told_action,
                d.action,
            )

    def on_analyst_verdicts(self, verdicts: Iterable[AnalystVerdict]) -> None:
        """Analyst labels read from ``labels`` (this replica's or another's)."""
        for verdict in verdicts:
            if self.reviews.verdict((verdict.bank_id, verdict.transaction_id)) is None:
                self.reviews.record(verdict)

    # ------------------------------------------------------------------------------ reading

    def stored(self, bank_id: str, transaction_id: str) -> Settled | None:
        """A decided entry of this bank (never another bank's: the key holds the bank)."""
        entry = self._get((bank_id, transaction_id))
        return entry if isinstance(entry, Settled) else None

    def entries(self) -> Iterator[Entry | Settled]:
        """Every entry kept, oldest first (waiting or answered)."""
        return (_view(stored) for stored in list(self._entries.values()))

    def _get(self, key: Key) -> Entry | Settled | None:
        stored = self._entries.get(key)
        return None if stored is None else _view(stored)

    # ------------------------------------------------------------------------------ reviews

    async def review(self, bank_id: str, transaction_id: str, is_fraud: bool) -> dict[str, Any]:
        """Record an analyst's verdict as a label (source analyst) on ``labels``; returns the
        label. Raises KeyError when the transaction is not awaiting review, and
        :class:`ReviewConflictError` when it already has the other verdict."""
        key = (bank_id, transaction_id)
        task = self._reviewing.get(key)
        if task is None:
            known = self.reviews.verdict(key)
            if known is None:
                if not self.reviews.pending(key):
                    raise KeyError(transaction_id)
                task = asyncio.ensure_future(self._send_verdict(key, is_fraud))
                self._reviewing[key] = task
                task.add_done_callback(lambda _t: self._reviewing.pop(key, None))
            elif known.is_fraud == is_fraud:
                return known.label
            else:
                raise ReviewConflictError(_verdict_conflict(transaction_id, known.is_fraud))
        label = await asyncio.shield(task)
        if label["is_fraud"] != is_fraud:
            raise ReviewConflictError(_verdict_conflict(transaction_id, label["is_fraud"]))
        return label

    async def _send_verdict(self, key: Key, is_fraud: bool) -> dict[str, Any]:
        bank_id, transaction_id = key
        label = {
            "transaction_id": transaction_id,
            "is_fraud": is_fraud,
            "reported_at": rfc3339_ms(datetime.fromtimestamp(self._wall(), tz=UTC)),
            "bank_id": bank_id,
            "source": "analyst",
        }
        assert self._link is not None
        await self._link.send_label(transaction_id.encode(), orjson.dumps(label))
        self.reviews.record(AnalystVerdict(bank_id, transaction_id, is_fraud, label))
        return label

    # ------------------------------------------------------------------------------ memory

    def _insert(self, key: Key, stored: Stored) -> None:
        self._entries[key] = stored
        self._evict()

    def _evict(self) -> None:
        entries = self._entries
        horizon = self._wall() - self.limits.window_s
        while entries:
            oldest = _view(next(iter(entries.values())))
            if len(entries) <= self.limits.max_entries and oldest.stored_at >= horizon:
                return
            if oldest.in_flight:
                return  # answered within its deadline; evicted on a later insert
            entries.popitem(last=False)

    def close(self) -> None:
        """Answer every waiting request now (shutdown): the fallback decides."""
        for stored in list(self._entries.values()):
            if isinstance(stored, Entry) and stored.in_flight:
                self._deadline(stored)


def _action(decision: bytes | None) -> str:
    try:
        return str(orjson.loads(decision or b"{}").get("action", ""))
    except (orjson.JSONDecodeError, AttributeError):
        return ""


def _differing_fields(earlier: bytes, now: bytes) -> list[str]:
    a, b = orjson.loads(earlier), orjson.loads(now)
    return [k for k in WIRE_FIELDS if a.get(k) != b.get(k)]


def _verdict_conflict(transaction_id: str, is_fraud: bool) -> str:
    said = "fraud" if is_fraud else "genuine"
    return f"transaction {transaction_id!r} was already reviewed as {said}"
