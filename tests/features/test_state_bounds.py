"""Bounded feature state: idle expiry in event time, the card capacity, and that neither makes
online features differ from offline ones (docs/stream.md, "Memory bounds")."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from scoring.features import EngineConfig, FeatureEngine, label_events, replay_log
from scoring.features.catalog import DAY_MS
from scoring.features.engine import DEFAULT_MAX_CARDS
from scoring.settings import Settings
from tests.features.test_engine import T0, feature, make_labels, make_log


def _new_cards_log(days: int, cards_per_day: int, *, seed: int = 0) -> list[dict]:
    """Every card is new: ``cards_per_day`` cards a day, each with three transactions within
    its first hours, at merchants shared by everyone."""
    rng = np.random.default_rng(seed)
    rows = []
    for day in range(days):
        for c in range(cards_per_day):
            first = T0 + day * DAY_MS + int(rng.integers(0, DAY_MS // 2))
            for k in range(3):
                rows.append(
                    {
                        "card_id": f"d{day}-c{c}",
                        "timestamp": first + k * int(rng.integers(1, 3_600_000)),
                        "amount": float(rng.uniform(1, 500)),
                        "merchant_id": f"m{int(rng.integers(0, 40))}",
                        "terminal_id": f"k{int(rng.integers(0, 80))}",
                        "country": "FR",
                        "channel": "pos",
                    }
                )
    rows.sort(key=lambda r: r["timestamp"])
    return rows


def test_settings_default_is_the_engine_default() -> None:
    # offline (EngineConfig()) and the worker (settings) agree unless someone configures them
    assert Settings().scoring.max_cards == DEFAULT_MAX_CARDS == EngineConfig().max_cards
    assert EngineConfig.from_settings(Settings()) == EngineConfig()


def test_always_new_cards_keep_memory_flat_without_any_cap() -> None:
    """The TTL alone bounds the state: rows of cards idle past it are freed at each event-time
    day start and reused, so after TTL + 1 day neither the held cards nor the arrays grow."""
    rows = _new_cards_log(days=12, cards_per_day=200)
    engine = FeatureEngine(EngineConfig(ttl_days=3, max_cards=None))
    held, allocated = [], []
    for day in range(12):
        start, stop = T0 + day * DAY_MS, T0 + (day + 1) * DAY_MS
        engine.process(make_log([r for r in rows if start <= r["timestamp"] < stop]))
        held.append(len(engine.cards))
        allocated.append(engine.card_f.shape[0])
    # cards of at most TTL + 1 days (+ the day being processed) are held
    assert max(held) <= 5 * 200, held
    assert held[-1] == held[-2] == held[-3], held  # flat: 4 days' cards, one day freed per day
    assert allocated[-1] == allocated[5], allocated  # the arrays stopped growing
    assert engine.evictions[("card", "ttl")] == 12 * 200 - held[-1]
    assert engine.evictions[("merchant", "ttl")] == 0  # merchants are busy every day


def test_the_cap_bounds_cards_and_arrays() -> None:
    rows = _new_cards_log(days=3, cards_per_day=2_000)
    config = EngineConfig(max_cards=1_000)
    engine = FeatureEngine(config)
    most = 0
    for start in range(0, len(rows), 500):
        engine.process(make_log(rows[start : start + 500]))
        most = max(most, len(engine.cards))
    assert config.card_row_limit is not None
    # over the cap by at most the new cards of one second (none here: one card per few seconds)
    assert most <= config.max_cards + 1
    assert engine.card_f.shape[0] <= config.card_row_limit
    assert engine.evictions[("card", "capacity")] >= 6_000 - 1_001


def test_the_least_recently_active_cards_are_forgotten() -> None:
    config = EngineConfig(max_cards=3)  # a capacity eviction keeps 3 - 1 = 2 cards
    rows = [
        {"card_id": "a", "timestamp": T0, "amount": 5.0},
        {"card_id": "b", "timestamp": T0 + 1_000, "amount": 5.0},
        {"card_id": "c", "timestamp": T0 + 2_000, "amount": 5.0},
        {"card_id": "a", "timestamp": T0 + 3_000, "amount": 5.0},  # a is now the most recent
        {"card_id": "d", "timestamp": T0 + 4_000, "amount": 5.0},  # 4 cards held
        # second 5 begins with 4 > 3 cards: b and c (least recent) go, a and d stay
        {"card_id": "b", "timestamp": T0 + 5_000, "amount": 5.0},
        {"card_id": "a", "timestamp": T0 + 5_001, "amount": 5.0},
    ]
    engine = FeatureEngine(config)
    features = engine.process(make_log(rows))
    assert feature(features, 5, "card_tx_total") == 0  # b starts afresh
    assert np.isnan(feature(features, 5, "card_seconds_since_prev"))
    assert feature(features, 6, "card_tx_total") == 2  # a kept its history
    assert set(engine.cards.slots) == {"a", "b", "d"}
    assert engine.evictions[("card", "capacity")] == 2


def _online_calls(
    transactions: pa.Table, events: pa.Table, partitions: int
) -> list[tuple[pa.Table, pa.Table | None]]:
    """The calls a stream worker makes: per second, the transactions of each partition (keyed
    by card) as they arrive — partition by partition, so not in time order within the second —
    and the second's labels together with the next second's transactions."""
    ts = transactions.column("timestamp").cast(pa.int64()).to_numpy()
    second = ts // 1_000
    part = np.array([int(c[1:]) % partitions for c in transactions.column("card_id").to_pylist()])
    label_second = events.column("reported_at").cast(pa.int64()).to_numpy() // 1_000
    calls: list[tuple[pa.Table, pa.Table | None]] = []
    pending: pa.Table | None = None
    for s in np.unique(second):
        due = events.filter(pa.array(label_second < s))
        events = events.filter(pa.array(label_second >= s))
        label_second = label_second[label_second >= s]
        pending = due if due.num_rows else None
        for p in range(partitions):
            rows = np.flatnonzero((second == s) & (part == p))
            if rows.size:
                calls.append((transactions.take(pa.array(rows)), pending))
                pending = None
        if pending is not None:
            calls.append((transactions.slice(0, 0), pending))
    if events.num_rows:
        calls.append((transactions.slice(0, 0), events))
    return calls


def test_online_equals_offline_with_expiry_and_capacity_evictions() -> None:
    """The worker's calls (per second and partition, labels a second later, a snapshot and
    restore in between) give the very features of one offline replay, while the cap and the TTL
    both evict."""
    rng = np.random.default_rng(5)
    rows = []
    t = T0
    gaps = [0, 7, 130, 900, 2_500, 40_000, 600_000, DAY_MS // 2]
    for _ in range(3_000):
        t += int(rng.choice(gaps, p=[0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.098, 0.002]))
        rows.append(
            {
                # a few busy cards come back often, most are seen a few times
                "card_id": f"c{int(rng.integers(0, 8))}"
                if rng.random() < 0.3
                else f"c{int(rng.integers(8, 900))}",
                "timestamp": t,
                "amount": float(rng.uniform(1, 900)),
                "merchant_id": f"m{int(rng.integers(0, 30))}",
                "terminal_id": f"k{int(rng.integers(0, 60))}",
                "country": str(rng.choice(["FR", "DE"])),
                "channel": "ecom",
            }
        )
    for k in range(60):  # then a quiet week of four cards: the others expire by the TTL
        t += 3 * 3_600_000
        rows.append({"card_id": f"c{k % 4}", "timestamp": t, "amount": 20.0, "merchant_id": "m1"})
    transactions = make_log(rows)
    tx_ids = transactions.column("transaction_id").to_pylist()
    labelled = rng.choice(len(rows), 400, replace=False)
    labels = make_labels(
        [
            (tx_ids[i], bool(rng.random() < 0.5), rows[i]["timestamp"] + int(rng.integers(1, 9e6)))
            for i in labelled
        ]
    )
    config = EngineConfig(ttl_days=2, max_cards=200)
    offline_engine = FeatureEngine(config)
    offline = replay_log(transactions, labels, engine=offline_engine)
    assert offline_engine.evictions[("card", "capacity")] > 500
    assert offline_engine.evictions[("card", "ttl")] > 0

    events = label_events(transactions, labels)
    engine = FeatureEngine(config)
    online = np.full_like(offline, np.nan)
    row_of = {tx: i for i, tx in enumerate(tx_ids)}
    calls = _online_calls(transactions, events, partitions=3)
    for n, (tx, lb) in enumerate(calls):
        if n == len(calls) // 2:
            engine = FeatureEngine.restore(engine.snapshot(), config=config)
        features = engine.process(tx, lb)
        online[[row_of[x] for x in tx.column("transaction_id").to_pylist()]] = features
    assert engine.evictions == offline_engine.evictions
    np.testing.assert_array_equal(online, offline)


def test_capacity_evictions_survive_a_snapshot() -> None:
    rows = _new_cards_log(days=2, cards_per_day=300)
    log = make_log(rows)
    config = EngineConfig(max_cards=100)
    whole = FeatureEngine(config)
    expected = whole.process(log)
    half = log.num_rows // 2
    first = FeatureEngine(config)
    head = first.process(log.slice(0, half))
    second = FeatureEngine.restore(first.snapshot())  # the saved config, cap included
    assert second.config.max_cards == 100
    tail = second.process(log.slice(half))
    np.testing.assert_array_equal(np.vstack([head, tail]), expected)
    assert second.evictions == whole.evictions
    assert len(second.cards) == len(whole.cards)


def test_without_a_cap_nothing_is_evicted_before_the_ttl() -> None:
    rows = _new_cards_log(days=2, cards_per_day=300)
    capped = FeatureEngine(EngineConfig(max_cards=10**6)).process(make_log(rows))
    free = FeatureEngine(EngineConfig(max_cards=None)).process(make_log(rows))
    np.testing.assert_array_equal(capped, free)
