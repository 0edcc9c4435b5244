"""The simulated workload of ``up`` / ``demo``: transactions and delayed labels, paced, through
Kafka and through the API.

Two kinds of segment, walked in event-time order at a target rate:

* **history** — the simulated month, every transaction produced to ``transactions`` (keyed by
  card, like ``fraudstream replay``) and its labels to ``labels``. Its decisions must equal the
  offline ``score-log`` exactly.
* **live** — the days after the month, looped for ``up`` (each loop shifted by the segment's length,
  transaction ids suffixed ``-r<loop>``): one bank's transactions go to ``POST
  /v1/transactions`` (and its labels to ``POST /v1/labels``) over HTTP with bounded concurrency,
  each with its card's raw card number in ``card_number`` (demo_cards.py: the API tokenizes it back
  to the ``card_id`` its history carries); the other banks' go to Kafka as before.

Labels are sent ``LABEL_LOOKAHEAD_MS`` of event time *before* their ``reported_at``. They take
effect at ``reported_at`` anyway (the worker's merge holds them until their second; the trainer
and the offline replay only see a label from ``reported_at`` on), so nothing learns earlier. Why:
the worker's merge lets no transaction pass a labels partition whose newest label is older, until
that partition has been quiet for ``stream.label_idle_ms``; ``up``/``demo`` run the worker with a
2 s grace (so the history replay is exact), and labels sent at their own time would hold every
live transaction back by up to 2 s. Sent a day early, a labels partition's newest label is ahead
of the traffic.

Per-card order is kept on both paths: Kafka by key, the API by never having two requests of one card
in flight (the next waits for the previous answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from scoring.logs import TIMESTAMP
from scoring.settings import KafkaSettings
from scoring.wire import encode_labels, encode_transactions

DAY_MS = 86_400_000
LABEL_LOOKAHEAD_MS = DAY_MS
SEND_MS = "send_ms"  # the column of a labels table that says when it goes out


def millis(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(column.cast(TIMESTAMP).cast(pa.int64()).to_numpy(), dtype=np.int64)


def sort_by_time(transactions: pa.Table) -> pa.Table:
    order = np.argsort(millis(transactions["timestamp"]), kind="stable")
    return transactions.take(pa.array(order))


def with_send_time(labels: pa.Table) -> pa.Table:
    """Labels ordered by the event time at which they are sent (see the module docstring)."""
    send = millis(labels["reported_at"]) - LABEL_LOOKAHEAD_MS
    order = np.argsort(send, kind="stable")
    return labels.append_column(SEND_MS, pa.array(send, pa.int64())).take(pa.array(order))


def split_labels(labels: pa.Table, before_ms: int) -> tuple[pa.Table, pa.Table]:
    """Labels (with send times) sent before ``before_ms`` of event time, and the rest."""
    early = pc.less(labels[SEND_MS], pa.scalar(before_ms, pa.int64()))
    return labels.filter(early), labels.filter(pc.invert(early))


def _shifted(table: pa.Table, time_columns: tuple[str, ...], shift_ms: int, loop: int) -> pa.Table:
    if loop == 0:
        return table
    for name in time_columns:
        index = table.column_names.index(name)
        moved = pc.add(table[name].cast(pa.int64()), pa.scalar(shift_ms, pa.int64()))
        table = table.set_column(index, name, moved.cast(table.schema.field(name).type))
    index = table.column_names.index("transaction_id")
    ids = pc.binary_join_element_wise(table["transaction_id"], f"-r{loop}", "")
    return table.set_column(index, "transaction_id", ids)


def live_segments(
    transactions: pa.Table, labels: pa.Table, leftover: pa.Table, *, loop_ms: int, start_ms: int
) -> Iterator[tuple[pa.Table, pa.Table]]:
    """The live days, loop after loop: (transactions, labels to send among them). ``labels`` are
    the live transactions' labels, ``leftover`` those of the history still to send (both with
    send times); a loop's labels that fall after it go out with the next one."""
    carry = leftover
    loop = 0
    while True:
        shift = loop * loop_ms
        tx = _shifted(transactions, ("timestamp",), shift, loop)
        mine = _shifted(labels, ("reported_at", SEND_MS), shift, loop)
        # (shifted columns lose their not-null flag: "permissive" unifies the schemas)
        pending = pa.concat_tables([carry, mine], promote_options="permissive")
        order = np.argsort(pending[SEND_MS].to_numpy(), kind="stable")
        now, carry = split_labels(pending.take(pa.array(order)), start_ms + shift + loop_ms)
        yield tx, now
        loop += 1


# ------------------------------------------------------------------------------------ the API


@dataclass
class ApiStats:
    sent: int = 0
    answered: int = 0
    degraded: int = 0
    errors: int = 0
    card_numbers: int = 0  # transactions sent with a raw card number in ``card_number``
    labels: int = 0
    label_errors: int = 0
    in_flight: int = 0
    first_errors: list[str] = field(default_factory=list)
    # (wall time, client latency ms) of recent answers, for the live view's window
    recent: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=50_000))
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1_000_000))


class ApiClient:
    """Sends transactions and labels to ``fraudstream api`` from an asyncio loop on its own thread.

    ``submit_*`` is called from the workload thread and blocks while ``concurrency`` requests are in
    flight (the workload's pace then drops: back-pressure, not an unbounded queue)."""

    def __init__(self, url: str, key: str, *, concurrency: int, keep_answers: bool) -> None:
        import httpx

        self.stats = ApiStats()
        self.answers: dict[str, dict[str, Any]] = {}  # transaction id -> the decision answered
        self._keep = keep_answers
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self._slots = threading.Semaphore(concurrency)
        self._last_by_card: dict[str, asyncio.Future[None]] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="api-client")
        self._thread.daemon = True  # never keeps a failed run alive; close() joins it
        self._thread.start()

        async def make() -> httpx.AsyncClient:
            return httpx.AsyncClient(
                base_url=url,
                timeout=10.0,
                limits=httpx.Limits(
                    max_connections=concurrency, max_keepalive_connections=concurrency
                ),
            )

        self._client = asyncio.run_coroutine_threadsafe(make(), self._loop).result()

    def submit_transaction(self, transaction_id: str, card_id: str, body: bytes) -> None:
        self._slots.acquire()
        self.stats.in_flight += 1
        self.stats.sent += 1
        asyncio.run_coroutine_threadsafe(
            self._transaction(transaction_id, card_id, body), self._loop
        )

    def submit_label(self, body: bytes) -> None:
        self._slots.acquire()
        self.stats.in_flight += 1
        asyncio.run_coroutine_threadsafe(self._label(body), self._loop)

    async def _transaction(self, transaction_id: str, card_id: str, body: bytes) -> None:
        done: asyncio.Future[None] = self._loop.create_future()
        previous = self._last_by_card.get(card_id)
        self._last_by_card[card_id] = done
        try:
            if previous is not None:
                await previous  # this card's previous request first: per-card order
            began = time.perf_counter()
            response = await self._client.post(
                "/v1/transactions", content=body, headers=self._headers
            )
            latency_ms = (time.perf_counter() - began) * 1e3
            if response.status_code != 200:
                self._error(f"{transaction_id}: HTTP {response.status_code} {response.text[:200]}")
                return
            answer = orjson.loads(response.content)
            self.stats.answered += 1
            self.stats.degraded += bool(answer.get("degraded"))
            self.stats.recent.append((time.monotonic(), latency_ms))
            self.stats.latencies_ms.append(latency_ms)
            if self._keep:
                self.answers[transaction_id] = answer
        except Exception as exc:  # any failure is counted and shown; the run goes on
            self._error(f"{transaction_id}: {type(exc).__name__}: {exc}")
        finally:
            done.set_result(None)
            if self._last_by_card.get(card_id) is done:
                del self._last_by_card[card_id]
            self.stats.in_flight -= 1
            self._slots.release()

    async def _label(self, body: bytes) -> None:
        try:
            response = await self._client.post("/v1/labels", content=body, headers=self._headers)
            if response.status_code == 202:
                self.stats.labels += 1
            else:
                self.stats.label_errors += 1
                self._error(f"label: HTTP {response.status_code} {response.text[:200]}")
        except Exception as exc:
            self.stats.label_errors += 1
            self._error(f"label: {type(exc).__name__}: {exc}")
        finally:
            self.stats.in_flight -= 1
            self._slots.release()

    def _error(self, text: str) -> None:
        self.stats.errors += 1
        if len(self.stats.first_errors) < 5:
            self.stats.first_errors.append(text)

    def drain(self, timeout: float) -> bool:
        """Wait until no request is in flight."""
        deadline = time.monotonic() + timeout
        while self.stats.in_flight > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.stats.in_flight == 0

    def close(self) -> None:
        if not self._loop.is_running():
            return
        closing: Future[None] = asyncio.run_coroutine_threadsafe(self._client.aclose(), self._loop)
        with contextlib.suppress(Exception):
            closing.result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


# ------------------------------------------------------------------------------- the walker


@dataclass
class WalkStats:
    kafka_transactions: int = 0
    api_transactions: int = 0
    labels: int = 0
    failed: int = 0  # Kafka deliveries that failed
    event_time_ms: int = 0  # of the last transaction sent


class Walker:
    """Walks segments in event-time order at a rate, sending each event on its path."""

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        api: ApiClient | None = None,
        api_bank: str | None = None,
        card_numbers: dict[str, str] | None = None,
        stop: threading.Event,
    ) -> None:
        from confluent_kafka import Producer

        from stream.replay import producer_config
        from stream.topics import TopicNames

        self.topics = TopicNames.from_settings(kafka)
        self.producer = Producer(producer_config(kafka))
        self.api = api
        self.api_bank = api_bank
        # card_id (a token) -> the raw card number the API bank sends instead (demo_cards.py)
        self.card_numbers = card_numbers or {}
        self.stop = stop
        self.stats = WalkStats()

    def _delivered(self, err: object, _msg: object) -> None:
        if err is not None:
            self.stats.failed += 1

    def _produce(self, topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, on_delivery=self._delivered)
                return
            except BufferError:  # local queue full: let librdkafka drain it
                self.producer.poll(0.05)

    def walk(
        self,
        transactions: pa.Table,
        labels: pa.Table,
        *,
        rate: float,
        limit: int | None = None,
        use_api: bool = False,
    ) -> int:
        """Send ``transactions`` (time-ordered) and ``labels`` (by send time) at ``rate``
        transactions/s, the API bank's through the API if ``use_api``; returns how many
        transactions were sent (fewer if stopped or limited)."""
        n = transactions.num_rows if limit is None else min(limit, transactions.num_rows)
        tx_ms = millis(transactions["timestamp"])
        label_ms = labels[SEND_MS].to_numpy() if labels.num_rows else np.empty(0, np.int64)
        step = int(min(2000, max(1, rate / 100)))  # 10 ms of traffic per chunk: no bursts
        next_label = 0
        started = time.monotonic()
        sent = 0
        while sent < n and not self.stop.is_set():
            chunk = transactions.slice(sent, min(step, n - sent))
            stop_label = int(np.searchsorted(label_ms, tx_ms[sent + chunk.num_rows - 1], "right"))
            if stop_label > next_label:
                self._send_labels(labels.slice(next_label, stop_label - next_label), use_api)
                next_label = stop_label
            wait = started + sent / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._send_transactions(chunk, use_api)
            sent += chunk.num_rows
            self.stats.event_time_ms = int(tx_ms[sent - 1])
            self.producer.poll(0)
        if (
            sent == transactions.num_rows
            and next_label < labels.num_rows
            and not self.stop.is_set()
        ):
            self._send_labels(labels.slice(next_label), use_api)
        self.flush()
        return sent

    def _send_transactions(self, chunk: pa.Table, use_api: bool) -> None:
        values = encode_transactions(chunk)
        cards = chunk["card_id"].to_pylist()
        banks = chunk["bank_id"].to_pylist()
        ids = chunk["transaction_id"].to_pylist()
        for tx_id, card, bank, value in zip(ids, cards, banks, values, strict=True):
            if use_api and self.api is not None and bank == self.api_bank:
                record = orjson.loads(value)
                del record["bank_id"]  # the API takes the bank from the key, never from the body
                number = self.card_numbers.get(card)
                if number is not None:  # the API tokenizes it back to ``card``
                    del record["card_id"]
                    record["card_number"] = number
                    self.api.stats.card_numbers += 1
                self.api.submit_transaction(tx_id, card, orjson.dumps(record))
                self.stats.api_transactions += 1
            else:
                self._produce(self.topics.transactions, card.encode(), value)
                self.stats.kafka_transactions += 1

    def _send_labels(self, labels: pa.Table, use_api: bool) -> None:
        values = encode_labels(labels)
        banks = labels["bank_id"].to_pylist()
        ids = labels["transaction_id"].to_pylist()
        for tx_id, bank, value in zip(ids, banks, values, strict=True):
            if use_api and self.api is not None and bank == self.api_bank:
                record = orjson.loads(value)
                del record["bank_id"]
                self.api.submit_label(orjson.dumps(record))
            else:
                self._produce(self.topics.labels, tx_id.encode(), value)
            self.stats.labels += 1

    def flush(self) -> None:
        remaining = self.producer.flush(30)
        if remaining:
            self.stats.failed += remaining

    def close(self) -> None:
        self.flush()
