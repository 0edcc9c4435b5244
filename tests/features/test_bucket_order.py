"""Arrival order within a second never changes a feature (the stream worker's merge by bucket).

A stream worker reading every partition takes all events of second b before any of second b + 1,
but within the open second it takes transactions in arrival order, which differs between runs and
from the offline replay (sorted by time). Online == offline and restart == uninterrupted need the
features to be bit-identical anyway: exact (quantised) pending sums, entities that never move
backwards in time, expiry decided per bucket, and labels effective at the end of their second.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from scoring.features import (
    EngineConfig,
    FeatureEngine,
    kernels,
    label_effective_ms,
    label_events,
    replay_log,
)
from scoring.features.catalog import DAY_MS, HOUR_MS, INDEX
from scoring.features.engine import LABEL_EVENT_SCHEMA
from scoring.logs import TIMESTAMP
from tests.features.test_engine import make_labels, make_log

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a second boundary
BUCKET = kernels.BUCKET_MS


def _random_log(rng: np.random.Generator, *, ttl_ms: int) -> tuple[pa.Table, pa.Table, list[int]]:
    """Transactions over a few seconds (some far apart, around the TTL), several cards sharing a
    few merchants and terminals, amounts with many decimals; labels reported a little later."""
    n_seconds = int(rng.integers(3, 9))
    gaps = rng.choice([1, 1, 1, 2, 5, ttl_ms // BUCKET, ttl_ms // BUCKET + 1], size=n_seconds)
    seconds = T0 // BUCKET + np.cumsum(gaps)
    rows = []
    for second in seconds:
        for _ in range(int(rng.integers(1, 14))):
            ms = int(rng.integers(0, BUCKET)) if rng.random() < 0.8 else int(rng.choice([0, 999]))
            merchant = int(rng.integers(0, 4))
            terminal = int(rng.integers(0, 4))
            rows.append(
                {
                    "card_id": f"c{rng.integers(0, 6)}",
                    "timestamp": int(second * BUCKET + ms),
                    # many significant digits: their float sums depend on the order of addition
                    "amount": float(rng.lognormal(4.0, 2.0)) + float(rng.random()) * 1e-7,
                    "merchant_id": None if merchant == 3 else f"m{merchant}",
                    "terminal_id": None if terminal == 3 else f"k{terminal}",
                    "country": str(rng.choice(["FR", "DE"])),
                    "channel": str(rng.choice(["pos", "ecom"])),
                    "mcc": "5411",
                    "card_present": bool(rng.random() < 0.5),
                }
            )
    rows.sort(key=lambda r: r["timestamp"])  # the offline log: time order
    labels = [
        (f"t{i}", bool(rng.random() < 0.5), row["timestamp"] + int(rng.integers(0, 4 * BUCKET)))
        for i, row in enumerate(rows)
        if rng.random() < 0.3
    ]
    return make_log(rows), make_labels(labels), [int(s) for s in seconds]


def _arrival_order(rng: np.random.Generator, bucket_rows: np.ndarray, cards: list[str]) -> list:
    """A random order of one second's transactions that keeps each card's own order (a card is on
    one partition, which delivers in order)."""
    shuffled = list(rng.permutation(bucket_rows))
    by_card: dict[str, list[int]] = {}
    for row in bucket_rows:  # time order
        by_card.setdefault(cards[row], []).append(int(row))
    return [by_card[cards[row]].pop(0) for row in shuffled]


def _state_by_key(engine: FeatureEngine) -> dict[tuple[str, str], np.ndarray]:
    out = {}
    for name, index, values, ints in (
        ("m", engine.merchants, engine.merchant_f, engine.merchant_i),
        ("k", engine.terminals, engine.terminal_f, engine.terminal_i),
        ("c", engine.cards, engine.card_f, engine.card_i),
    ):
        for key, slot in index.slots.items():
            out[name, key] = np.concatenate([values[slot], ints[slot].astype(np.float64)])
    return out


@pytest.mark.parametrize("seed", range(40))
def test_arrival_order_within_a_second_never_changes_features(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ttl_ms = int(rng.choice([3_500, 180 * DAY_MS]))
    config = EngineConfig(ttl_days=ttl_ms / DAY_MS)
    assert config.ttl_ms == ttl_ms
    transactions, labels, _ = _random_log(rng, ttl_ms=ttl_ms)
    offline = replay_log(transactions, labels, engine=FeatureEngine(config))

    # Online: second by second; within a second, transactions in a random arrival order, in calls
    # of one to three; the second's labels when it closes; a restart from a snapshot now and then.
    ts = transactions["timestamp"].cast(pa.int64()).to_numpy()
    cards = transactions["card_id"].to_pylist()
    events = label_events(transactions, labels)
    label_bucket = label_effective_ms(events["reported_at"].cast(pa.int64()).to_numpy()) // BUCKET
    online = np.full_like(offline, -1.0)
    engine = FeatureEngine(config)
    for bucket in np.union1d(ts // BUCKET, label_bucket):
        order = _arrival_order(rng, np.flatnonzero(ts // BUCKET == bucket), cards)
        while order:
            size = int(rng.integers(1, 4))
            rows, order = order[:size], order[size:]
            online[rows] = engine.process(transactions.take(pa.array(rows, pa.int64())))
            if rng.random() < 0.2:  # crash and restart: a restored engine carries on
                engine = FeatureEngine.restore(engine.snapshot())
        closing = events.filter(pa.array(label_bucket == bucket))
        engine.process(transactions.slice(0, 0), closing)

    assert np.array_equal(online, offline, equal_nan=True), np.argwhere(
        ~((online == offline) | (np.isnan(online) & np.isnan(offline)))
    )[:5]
    reference = FeatureEngine(config)
    replay_log(transactions, labels, engine=reference)
    expected, got = _state_by_key(reference), _state_by_key(engine)
    assert expected.keys() == got.keys()
    for key in expected:
        assert np.array_equal(expected[key], got[key]), key


def test_label_effective_ms_is_the_last_millisecond_of_its_second() -> None:
    second = T0 + 7 * BUCKET
    reported = np.array([second, second + 300, second + 999, second + 1_000], np.int64)
    effective = label_effective_ms(reported)
    assert effective.tolist() == [second + 999] * 3 + [second + 1_999]
    assert np.array_equal(label_effective_ms(effective), effective)  # idempotent


@pytest.mark.parametrize("chunk_rows", [1, 2, 1_000])
def test_a_label_counts_from_the_next_second(chunk_rows: int) -> None:
    second = T0 + 7 * BUCKET
    r = second + 300
    log = make_log(
        [
            {"card_id": "c", "timestamp": T0, "amount": 5.0, "terminal_id": "k"},
            {"card_id": "c", "timestamp": r + 1, "amount": 5.0, "terminal_id": "k"},
            {"card_id": "c", "timestamp": second + 999, "amount": 5.0, "terminal_id": "k"},
            {"card_id": "c", "timestamp": second + 1_000, "amount": 5.0, "terminal_id": "k"},
        ]
    )
    m = replay_log(log, make_labels([("t0", True, r)]), chunk_rows=chunk_rows)
    for row in (1, 2):  # in the label's own second: not yet known, not even 1 ms after r
        assert m[row, INDEX["card_fraud_labels_30d"]] == 0.0
        assert np.isnan(m[row, INDEX["card_seconds_since_fraud_label"]])
        assert m[row, INDEX["terminal_fraud_1d"]] == 0.0
    # the first transaction of the next second sees it, effective at second + 999
    assert m[3, INDEX["card_fraud_labels_30d"]] == np.exp(-1 / (30 * DAY_MS))
    assert m[3, INDEX["card_seconds_since_fraud_label"]] == 0.001
    assert m[3, INDEX["terminal_fraud_1d"]] == 1.0  # exp(-1 ms / 1 d) rounds to 1 on 2**-20


def _quantized(x: float) -> float:
    return float(np.floor(x * 2**20 + 0.5) / 2**20)


def test_a_late_event_never_moves_an_entity_backwards() -> None:
    engine = FeatureEngine()

    def tx(card: str, at: int) -> pa.Table:
        return make_log([{"card_id": card, "timestamp": at, "amount": 1.0, "merchant_id": "m"}])

    def state() -> tuple[int, int]:
        slot = engine.merchants.slots["m"]
        row = engine.merchant_i[slot]
        return int(row[kernels.EI_COMMITTED_AT]), int(row[kernels.EI_PENDING_BUCKET])

    history = []
    engine.process(tx("a", T0 + 5_000))
    engine.process(tx("b", T0 + 7_000))  # commits second 5 at T0 + 6000, second 7 pending
    history.append(state())
    assert history[-1] == (T0 + 6_000, T0 // BUCKET + 7)
    engine.process(tx("c", T0 + 2_000))  # late: older than the committed point
    history.append(state())
    late_label = pa.table(
        {
            "reported_at": pa.array([T0 + 1_500], pa.int64()).cast(TIMESTAMP),
            "is_fraud": [True],
            "card_id": ["a"],
            "bank_id": pa.nulls(1, pa.string()),
            "merchant_id": ["m"],
            "terminal_id": pa.nulls(1, pa.string()),
        },
        schema=LABEL_EVENT_SCHEMA,
    )
    engine.process(tx("a", T0 + 2_500).slice(0, 0), late_label)
    history.append(state())
    features = engine.process(tx("d", T0 + 8_000))  # commits second 7 (with the late events)
    history.append(state())
    assert history[1:3] == [history[0], history[0]]  # the late events joined the pending second 7
    assert history[-1] == (T0 + 8_000, T0 // BUCKET + 8)
    committed = [h[0] for h in history]
    assert committed == sorted(committed)

    tau = float(HOUR_MS)
    expected = _quantized(np.exp(-1_000 / tau)) * np.exp(-2_000 / tau) + (
        _quantized(np.exp(-1_000 / tau)) + _quantized(np.exp(-6_000 / tau))
    )
    assert features[0, INDEX["merchant_count_1h"]] == pytest.approx(expected, rel=1e-15)
    # the late label: decayed from its effective time T0 + 1999 to the end of second 7
    assert features[0, INDEX["merchant_fraud_1d"]] == _quantized(np.exp(-6_001 / DAY_MS))


def test_entity_expiry_and_eviction_agree_on_the_bucket() -> None:
    """An entity idle for longer than the TTL is reset at the start of a second, so eviction at
    any time of that second matches what the kernel would do on the next event."""
    config = EngineConfig(ttl_days=3_500 / DAY_MS)
    rows = [
        {"card_id": "a", "timestamp": T0 + 100, "amount": 3.0, "merchant_id": "m"},
        # 3.6 s later, but only 3.4 s after the start of the second: merchant m is kept
        {"card_id": "b", "timestamp": T0 + 3_700, "amount": 3.0, "merchant_id": "m"},
    ]
    whole = replay_log(make_log(rows), engine=FeatureEngine(config))
    assert whole[1, INDEX["merchant_count_1h"]] > 0.0
    engine = FeatureEngine(config)
    head = engine.process(make_log(rows[:1]))
    assert engine.evict_idle(T0 + 3_700) == 1  # card a only (3.6 s idle); merchant m stays
    assert "m" in engine.merchants.slots
    tail = engine.process(make_log(rows[1:]))
    assert np.array_equal(np.vstack([head, tail]), whole, equal_nan=True)
