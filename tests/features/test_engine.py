"""The feature engine: compiled == twin, point-in-time correctness, chunking, snapshots, TTL."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scoring.features import (
    FEATURE_NAMES,
    FeatureEngine,
    kernels,
    label_effective_ms,
    label_events,
    replay_log,
)
from scoring.features.catalog import DAY_MS, INDEX, MINUTE_MS
from scoring.features.engine import JSON_SLICE, dumps_yielding
from scoring.logs import TIMESTAMP

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a Thursday


def make_log(rows: list[dict]) -> pa.Table:
    columns: dict[str, list] = {
        name: [] for name in ("transaction_id", "card_id", "timestamp", "amount", "bank_id",
                              "merchant_id", "terminal_id", "mcc", "country", "channel",
                              "card_present")
    }  # fmt: skip
    for i, row in enumerate(rows):
        full = {"transaction_id": f"t{i}", **row}
        for name in columns:
            columns[name].append(full.get(name))
    table = pa.table({k: pa.array(v, type=pa.string()) for k, v in columns.items()
                      if k not in ("timestamp", "amount", "card_present")})  # fmt: skip
    table = table.append_column(
        "timestamp", pa.array(columns["timestamp"], pa.int64()).cast(TIMESTAMP)
    )
    table = table.append_column("amount", pa.array(columns["amount"], pa.float64()))
    return table.append_column("card_present", pa.array(columns["card_present"], pa.bool_()))


def make_labels(rows: list[tuple[str, bool, int]]) -> pa.Table:
    return pa.table(
        {
            "transaction_id": pa.array([r[0] for r in rows], pa.string()),
            "is_fraud": pa.array([r[1] for r in rows], pa.bool_()),
            "reported_at": pa.array([r[2] for r in rows], pa.int64()).cast(TIMESTAMP),
            "bank_id": pa.nulls(len(rows), pa.string()),
        }
    )


def feature(matrix: np.ndarray, row: int, name: str) -> float:
    return float(matrix[row, INDEX[name]])


# ------------------------------------------------------------------------ compiled and twin


def test_the_compiled_kernel_is_really_compiled() -> None:
    FeatureEngine().process(make_log([{"card_id": "c", "timestamp": T0, "amount": 1.0}]))
    # Fails if numba fell back to object mode or the entry point was never compiled.
    assert kernels.process_events_nb.nopython_signatures, "numba kernel did not compile"
    assert FeatureEngine()._kernel is kernels.process_events_nb
    assert FeatureEngine(pure_python=True)._kernel is kernels.process_events_py
    assert not hasattr(kernels.process_events_py, "nopython_signatures")


event = st.fixed_dictionaries(
    {
        "card": st.integers(0, 4),
        "bank": st.sampled_from([None, "b1", "b2"]),
        # sub-second gaps exercise the merchant/terminal buckets, long ones the TTL
        "gap_ms": st.one_of(st.just(0), st.integers(1, 1_500), st.integers(1, 10 * DAY_MS)),
        "amount": st.floats(0.01, 5_000, allow_nan=False),
        "merchant": st.one_of(st.none(), st.integers(0, 5)),
        "terminal": st.one_of(st.none(), st.integers(0, 5)),
        "country": st.sampled_from([None, "FR", "DE", "US"]),
        "channel": st.sampled_from([None, "pos", "ecom", "atm", "moto"]),
        "mcc": st.sampled_from([None, "5411", "0742", "6011"]),
        "card_present": st.sampled_from([None, True, False]),
        "label": st.one_of(
            st.none(),
            # delays within a second or two meet transactions of the label's own second
            st.tuples(st.booleans(), st.integers(0, 2_000) | st.integers(0, 20 * DAY_MS)),
        ),
    }
)


def _log_from(events: list[dict]) -> tuple[pa.Table, pa.Table]:
    rows, labels, t = [], [], T0
    for i, e in enumerate(events):
        t += e["gap_ms"]
        rows.append(
            {
                "card_id": f"c{e['card']}",
                "bank_id": e["bank"],
                "timestamp": t,
                "amount": e["amount"],
                "merchant_id": None if e["merchant"] is None else f"m{e['merchant']}",
                "terminal_id": None if e["terminal"] is None else f"k{e['terminal']}",
                "country": e["country"],
                "channel": e["channel"],
                "mcc": e["mcc"],
                "card_present": e["card_present"],
            }
        )
        if e["label"] is not None:
            labels.append((f"t{i}", e["label"][0], t + e["label"][1]))
    return make_log(rows), make_labels(labels)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event, min_size=1, max_size=60), st.integers(1, 40))
def test_compiled_kernel_equals_python_twin(events: list[dict], ttl_days: int) -> None:
    from scoring.features import EngineConfig

    transactions, labels = _log_from(events)
    compiled = FeatureEngine(EngineConfig(ttl_days=ttl_days), pure_python=False)
    twin = FeatureEngine(EngineConfig(ttl_days=ttl_days), pure_python=True)
    a = replay_log(transactions, labels, engine=compiled)
    b = replay_log(transactions, labels, engine=twin)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(compiled.card_f, twin.card_f, rtol=1e-12)
    np.testing.assert_array_equal(compiled.card_i, twin.card_i)


@settings(max_examples=30, deadline=None)
@given(st.lists(event, min_size=2, max_size=60), st.integers(1, 7))
def test_chunking_never_changes_features(events: list[dict], chunk_rows: int) -> None:
    transactions, labels = _log_from(events)
    whole = replay_log(transactions, labels)
    chunked = replay_log(transactions, labels, chunk_rows=chunk_rows)
    np.testing.assert_array_equal(whole, chunked)


@settings(max_examples=30, deadline=None)
@given(st.lists(event, min_size=2, max_size=60), st.data())
def test_snapshot_restore_continues_exactly(events: list[dict], data: st.DataObject) -> None:
    transactions, labels = _log_from(events)
    split = data.draw(st.integers(1, transactions.num_rows - 1))
    whole = replay_log(transactions, labels)

    events_table = label_events(transactions, labels)
    cut = transactions["timestamp"][split].cast(pa.int64()).as_py()
    # labels effective (at the end of their reported second) before the cut go to the first engine
    reported = events_table["reported_at"].cast(pa.int64()).to_numpy()
    early = pa.array(label_effective_ms(reported) < cut)
    first = FeatureEngine()
    head = first.process(transactions.slice(0, split), events_table.filter(early))
    captured = first.capture()  # serialised below, after the engine has moved on
    restored = FeatureEngine.restore(first.snapshot())
    np.testing.assert_array_equal(restored.card_f, first.card_f)
    np.testing.assert_array_equal(restored.card_i, first.card_i)
    assert restored.cards.slots == first.cards.slots
    later_events = events_table.filter(pa.compute.invert(early))
    first.process(transactions.slice(split), later_events)
    from_capture = FeatureEngine.restore(captured())
    np.testing.assert_array_equal(from_capture.card_f, restored.card_f)
    np.testing.assert_array_equal(from_capture.card_i, restored.card_i)
    assert from_capture.cards.slots == restored.cards.slots
    tail = restored.process(transactions.slice(split), later_events)
    np.testing.assert_array_equal(np.vstack([head, tail]), whole)


# ------------------------------------------------------------------------ definitions


def test_velocity_and_time_since_previous() -> None:
    log = make_log(
        [
            {"card_id": "c", "timestamp": T0, "amount": 10.0},
            {"card_id": "c", "timestamp": T0 + 10 * MINUTE_MS, "amount": 30.0},
            {"card_id": "other", "timestamp": T0 + 11 * MINUTE_MS, "amount": 99.0},
            {"card_id": "c", "timestamp": T0 + DAY_MS, "amount": 20.0},
        ]
    )
    m = replay_log(log)
    assert feature(m, 0, "card_tx_total") == 0
    assert np.isnan(feature(m, 0, "card_seconds_since_prev"))
    assert np.isnan(feature(m, 0, "card_amount_mean_30d"))
    assert feature(m, 0, "card_count_1d") == 0
    assert feature(m, 1, "card_seconds_since_prev") == 600
    assert feature(m, 1, "card_count_10m") == pytest.approx(np.exp(-1))
    assert feature(m, 1, "card_amount_sum_1h") == pytest.approx(10 * np.exp(-1 / 6))
    assert feature(m, 1, "amount_to_median_recent") == pytest.approx(3.0)
    assert feature(m, 3, "card_tx_total") == 2  # the other card does not count
    d = np.exp(-1.0)  # one day at the 1 d window
    expected_mean = (
        10 * np.exp(-(DAY_MS) / DAY_MS) + 30 * np.exp(-(DAY_MS - 10 * MINUTE_MS) / DAY_MS)
    ) / (np.exp(-1.0) + np.exp(-(DAY_MS - 10 * MINUTE_MS) / DAY_MS))
    assert feature(m, 3, "card_amount_mean_1d") == pytest.approx(expected_mean)
    assert feature(m, 3, "card_amount_max_1d") == pytest.approx(
        30 * np.exp(-(DAY_MS - 10 * MINUTE_MS) / DAY_MS)
    )
    assert feature(m, 3, "amount_to_median_recent") == pytest.approx(1.0)  # median of 10, 30
    assert d < 1
    assert feature(m, 0, "hour_of_day") == 0 and feature(m, 0, "day_of_week") == 3


def test_novelty_remembers_what_the_card_saw() -> None:
    home = {"merchant_id": "m1", "country": "FR", "channel": "pos", "mcc": "5411",
            "terminal_id": "k1"}  # fmt: skip
    away = {"merchant_id": "m2", "country": "US", "channel": "ecom", "mcc": "5999",
            "terminal_id": "k2"}  # fmt: skip
    log = make_log(
        [
            {"card_id": "c", "timestamp": T0, "amount": 1.0, **home},
            {"card_id": "c", "timestamp": T0 + 1, "amount": 1.0, **home},
            {"card_id": "c", "timestamp": T0 + 2, "amount": 1.0, **away},
            {"card_id": "c", "timestamp": T0 + 3, "amount": 1.0},
        ]
    )
    m = replay_log(log)
    names = ["card_new_merchant", "card_new_terminal", "card_new_country", "card_new_channel",
             "card_new_mcc", "card_country_not_first"]  # fmt: skip
    assert [feature(m, 0, n) for n in names] == [1, 1, 1, 1, 1, 0]
    assert [feature(m, 1, n) for n in names] == [0, 0, 0, 0, 0, 0]
    assert [feature(m, 2, n) for n in names] == [1, 1, 1, 1, 1, 1]
    assert all(np.isnan(feature(m, 3, n)) for n in names)  # absent fields: NaN, not "new"


def test_labels_count_only_after_they_are_reported() -> None:
    log = make_log(
        [
            {
                "card_id": "a",
                "timestamp": T0,
                "amount": 5.0,
                "terminal_id": "k",
                "merchant_id": "m",
            },
            {"card_id": "b", "timestamp": T0 + DAY_MS, "amount": 5.0, "terminal_id": "k"},
            {"card_id": "c", "timestamp": T0 + 2 * DAY_MS, "amount": 5.0, "terminal_id": "k"},
            {"card_id": "a", "timestamp": T0 + 3 * DAY_MS, "amount": 5.0},
        ]
    )
    labels = make_labels([("t0", True, T0 + DAY_MS), ("t1", False, T0 + DAY_MS)])
    m = replay_log(log, labels)
    # Labels take effect at the last millisecond of the second they were reported in.
    effective = T0 + DAY_MS + 999
    assert feature(m, 1, "terminal_fraud_7d") == 0  # reported at the same instant: not yet known
    # The terminal's pending label, decayed from `effective` to the bucket's end (1 ms), rounds to
    # exactly 1.0 (2**-20 grid); committed at T0 + DAY_MS + 1000, it decays from there.
    assert feature(m, 2, "terminal_fraud_7d") == pytest.approx(
        np.exp(-(DAY_MS - 1_000) / (7 * DAY_MS)), rel=1e-12
    )
    assert feature(m, 2, "merchant_fraud_7d") != feature(m, 2, "merchant_fraud_7d")  # no merchant
    assert feature(m, 3, "card_fraud_labels_30d") == pytest.approx(
        np.exp(-(T0 + 3 * DAY_MS - effective) / (30 * DAY_MS)), rel=1e-12
    )
    assert feature(m, 3, "card_seconds_since_fraud_label") == (T0 + 3 * DAY_MS - effective) / 1000
    assert np.isnan(feature(m, 2, "card_seconds_since_fraud_label"))


def test_missing_optional_fields_degrade_only_their_features() -> None:
    rng = np.random.default_rng(3)
    n = 300
    rows = [
        {"card_id": f"c{rng.integers(20)}", "timestamp": T0 + i * 7 * MINUTE_MS,
         "amount": float(rng.lognormal(3, 1)), "merchant_id": f"m{rng.integers(5)}",
         "terminal_id": f"k{rng.integers(8)}", "country": str(rng.choice(["FR", "DE"])),
         "channel": str(rng.choice(["pos", "ecom"])), "mcc": "5411", "card_present": True}
        for i in range(n)
    ]  # fmt: skip
    full = replay_log(make_log(rows))
    sparse = replay_log(make_log([{**r, "merchant_id": None, "country": None} for r in rows]))
    affected = {n for n in FEATURE_NAMES if n.startswith("merchant_")} | {
        "card_new_merchant", "card_new_country", "card_country_not_first"}  # fmt: skip
    for i, name in enumerate(FEATURE_NAMES):
        if name in affected:
            assert np.isnan(sparse[:, i]).all(), name
        else:
            np.testing.assert_array_equal(full[:, i], sparse[:, i], err_msg=name)


def test_idle_state_expires_and_eviction_changes_nothing() -> None:
    from scoring.features import EngineConfig

    rows = [
        {"card_id": "c", "timestamp": T0, "amount": 10.0, "merchant_id": "m"},
        {"card_id": "d", "timestamp": T0 + 5 * DAY_MS, "amount": 10.0},
        {"card_id": "c", "timestamp": T0 + 12 * DAY_MS, "amount": 10.0, "merchant_id": "m"},
    ]
    config = EngineConfig(ttl_days=10)
    uninterrupted = replay_log(make_log(rows), engine=FeatureEngine(config))
    assert feature(uninterrupted, 2, "card_tx_total") == 0  # forgotten after 10 idle days
    assert feature(uninterrupted, 2, "card_new_merchant") == 1
    engine = FeatureEngine(config)
    first = engine.process(make_log(rows[:2]))
    assert engine.evict_idle(T0 + 12 * DAY_MS) == 2  # card c and merchant m
    assert len(engine.cards) == 1
    rest = engine.process(make_log(rows[2:]))
    np.testing.assert_array_equal(np.vstack([first, rest]), uninterrupted)


def test_bank_scopes_cards() -> None:
    log = make_log(
        [
            {"card_id": "c", "bank_id": "b1", "timestamp": T0, "amount": 1.0},
            {"card_id": "c", "bank_id": "b2", "timestamp": T0 + 1, "amount": 1.0},
        ]
    )
    assert feature(replay_log(log), 1, "card_tx_total") == 0


def test_merchant_features_see_only_earlier_seconds() -> None:
    """A transaction sees its merchant's events up to the start of its own second: the view a
    stream worker can have of a merchant whose transactions arrive on every partition."""
    log = make_log(
        [
            {"card_id": "a", "timestamp": T0 + 100, "amount": 10.0, "merchant_id": "m"},
            {"card_id": "b", "timestamp": T0 + 900, "amount": 10.0, "merchant_id": "m"},
            {"card_id": "c", "timestamp": T0 + 1_500, "amount": 10.0, "merchant_id": "m"},
        ]
    )
    m = replay_log(log)
    assert feature(m, 1, "merchant_count_1h") == 0  # same second as the first: not yet visible
    # Each event of the first second is decayed to its end (T0 + 1000) and rounded to a multiple of
    # 2**-20 (exact pending sums), then the sum decays over the last 500 ms.
    tau = 3_600_000

    def q(x: float) -> float:
        return float(np.floor(x * 2**20 + 0.5) / 2**20)

    expected = (q(np.exp(-900 / tau)) + q(np.exp(-100 / tau))) * np.exp(-500 / tau)
    assert feature(m, 2, "merchant_count_1h") == pytest.approx(expected, rel=1e-15)
    unrounded = np.exp(-1_400 / tau) + np.exp(-600 / tau)
    assert abs(feature(m, 2, "merchant_count_1h") - unrounded) <= 2 * 2**-21
    assert feature(m, 2, "merchant_amount_mean_7d") == pytest.approx(10.0)
    assert feature(m, 2, "card_count_1h") == 0  # card features stay exact to the millisecond


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=20,
)


@given(
    small=json_values,
    keys=st.lists(st.text(max_size=12) | st.none(), min_size=0, max_size=3 * JSON_SLICE + 7),
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_checkpoint_json_is_written_in_slices_but_is_the_same_text(
    small: object, keys: list
) -> None:
    value = {"meta": small, "keys": {"cards": {"keys": keys, "free": list(range(len(keys)))}}}
    assert dumps_yielding(value) == json.dumps(value)
    assert dumps_yielding(keys) == json.dumps(keys)
