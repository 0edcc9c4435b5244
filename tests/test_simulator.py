"""The simulator: files the readers accept, typologies, rates, delays, determinism, invariants.

Worlds are small (30 days x 2,000 cards, ~100k transactions, well under a second each) so the
whole module runs in a few seconds. Ranges asserted here are the ones docs/simulator.md promises.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from fraudstream.cli import app
from scoring.logs import LABEL_SCHEMA, TRANSACTION_SCHEMA, read_labels, read_transactions
from scoring.records import looks_like_pan
from training.simulator import SimulationConfig, simulate, summarize
from training.simulator.catalog import COUNTRIES
from training.simulator.sampling import GroupSampler, systematic_counts
from training.simulator.typologies import NAMES

DAY_MS = 86_400_000
NEW_DAY = 20
SMALL = ["--days", "30", "--cards", "2000"]
ESTABLISHED = {
    "card_testing",
    "account_takeover",
    "compromised_terminal",
    "stolen_card_abroad",
    "high_value",
}

# Documented guarantees (docs/simulator.md, "What the tests hold").
FRAUD_RATE_RANGE = (0.002, 0.010)
DELAY_P50_DAYS = (4.0, 14.0)
DELAY_P90_DAYS = (14.0, 40.0)
MAX_DELAY_DAYS = 60.0


def run_cli(out: Path, *extra: str) -> None:
    result = CliRunner().invoke(app, ["simulate", "--out", str(out), *SMALL, *extra])
    assert result.exit_code == 0, result.output
    assert "fraud rate" in result.stdout


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pa.Table]:
    """One CLI run with the new typology switched on at NEW_DAY, read back with the readers."""
    out = tmp_path_factory.mktemp("sim")
    run_cli(out, "--new-typology-day", str(NEW_DAY))
    return {
        "transactions": read_transactions(out / "transactions.parquet"),
        "labels": read_labels(out / "labels.parquet"),
    }


def _ms(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).cast(pa.int64()).to_numpy()


def _start_ms() -> int:
    return SimulationConfig().start_ms


def _fraud_with_times(world: dict[str, pa.Table]) -> pa.Table:
    labels = world["labels"]
    fraud = labels.filter(pc.equal(labels.column("is_fraud"), True))
    return fraud.join(
        world["transactions"].select(["transaction_id", "bank_id", "timestamp"]),
        keys=["transaction_id", "bank_id"],
    )


# ------------------------------------------------------------------------------- files, schemas


def test_cli_writes_files_the_readers_accept(world: dict[str, pa.Table]) -> None:
    tx, labels = world["transactions"], world["labels"]
    assert tx.num_rows > 50_000
    assert tx.schema.names == TRANSACTION_SCHEMA.names
    assert labels.schema.names == [*LABEL_SCHEMA.names, "fraud_type"]
    # The simulator fills every optional field.
    for name in tx.column_names:
        assert tx.column(name).null_count == 0, name


def test_transaction_ids_unique_and_sorted_by_time(world: dict[str, pa.Table]) -> None:
    tx = world["transactions"]
    assert len(pc.unique(tx.column("transaction_id"))) == tx.num_rows
    assert all(
        re.fullmatch(r"tx_bank\d\d_\d{9}", v)
        for v in tx.column("transaction_id")[:1000].to_pylist()
    )
    assert np.all(np.diff(_ms(tx, "timestamp")) >= 0)
    ts = _ms(tx, "timestamp")
    assert ts.min() >= _start_ms()
    assert ts.max() < _start_ms() + 30 * DAY_MS


def test_no_card_id_is_a_luhn_valid_number(world: dict[str, pa.Table]) -> None:
    cards = pc.unique(world["transactions"].column("card_id")).to_pylist()
    assert all(re.fullmatch(r"card_\d{6}", c) for c in cards)
    assert not any(looks_like_pan(c) for c in cards)


def test_per_card_timestamps_sorted(world: dict[str, pa.Table]) -> None:
    tx = world["transactions"]
    card = tx.column("card_id").combine_chunks().dictionary_encode().indices.to_numpy()
    ts = _ms(tx, "timestamp")
    order = np.argsort(card, kind="stable")  # keeps file order within each card
    same_card = np.diff(card[order]) == 0
    assert np.all(np.diff(ts[order])[same_card] >= 0)


def test_fields_are_consistent(world: dict[str, pa.Table]) -> None:
    tx = world["transactions"]
    country = tx.column("country").to_numpy(zero_copy_only=False)
    currency = tx.column("currency").to_numpy(zero_copy_only=False)
    # billing amounts (the default): the card's home currency, one per card
    assert set(currency) <= {c.currency for c in COUNTRIES}
    assert len(set(zip(tx.column("card_id").to_pylist(), currency, strict=True))) == len(
        set(tx.column("card_id").to_pylist())
    )
    del country
    mcc = tx.column("mcc").to_numpy(zero_copy_only=False)
    channel = tx.column("channel").to_numpy(zero_copy_only=False)
    present = tx.column("card_present").to_numpy(zero_copy_only=False)
    assert np.all((mcc == "6011") == (channel == "atm"))
    assert np.all(present == np.isin(channel, ["pos", "atm"]))
    assert set(channel) == {"pos", "ecom", "atm", "moto"}
    assert len(set(tx.column("bank_id").to_pylist())) == 3
    assert np.all(tx.column("amount").to_numpy() > 0)


# ------------------------------------------------------------------------- typologies, rates


def test_every_typology_present_and_the_new_one_from_its_day(world: dict[str, pa.Table]) -> None:
    fraud = _fraud_with_times(world)
    kinds = fraud.column("fraud_type").to_numpy(zero_copy_only=False)
    assert set(kinds) == set(NAMES) == ESTABLISHED | {"bin_attack"}
    day = (_ms(fraud, "timestamp") - _start_ms()) // DAY_MS
    assert day[kinds == "bin_attack"].min() == NEW_DAY
    # Genuine labels carry no fraud_type; fraud labels always do.
    labels = world["labels"]
    genuine = labels.filter(pc.equal(labels.column("is_fraud"), False))
    assert genuine.column("fraud_type").null_count == genuine.num_rows
    assert fraud.column("fraud_type").null_count == 0


def test_new_typology_absent_when_not_switched_on() -> None:
    _, labels = simulate(SimulationConfig(cards=2000, days=30))
    kinds = set(pc.drop_null(labels.column("fraud_type")).to_pylist())
    assert kinds == ESTABLISHED


def test_fraud_rate_in_documented_range(world: dict[str, pa.Table]) -> None:
    summary = summarize(world["transactions"], world["labels"], _start_ms())
    low, high = FRAUD_RATE_RANGE
    assert low <= summary.fraud_rate <= high


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fraud_rate_in_range_for_other_seeds(seed: int) -> None:
    config = SimulationConfig(cards=2000, days=30, seed=seed)
    summary = summarize(*simulate(config), config.start_ms)
    assert FRAUD_RATE_RANGE[0] <= summary.fraud_rate <= FRAUD_RATE_RANGE[1]
    assert set(summary.by_typology) == ESTABLISHED


def test_mix_drifts_as_scheduled() -> None:
    """Card testing's share falls and account takeover's grows from the first to the last third."""
    config = SimulationConfig(cards=4000, days=60)
    tx, labels = simulate(config)
    fraud = _fraud_with_times({"transactions": tx, "labels": labels})
    day = (_ms(fraud, "timestamp") - config.start_ms) // DAY_MS
    kinds = fraud.column("fraud_type").to_numpy(zero_copy_only=False)
    early, late = day < 20, day >= 40

    def share(name: str, when: np.ndarray) -> float:
        return float(np.mean(kinds[when] == name))

    assert share("card_testing", late) < share("card_testing", early)
    assert share("account_takeover", late) > share("account_takeover", early)


# ----------------------------------------------------------------------------------- labels


def test_labels_reported_after_their_transactions(world: dict[str, pa.Table]) -> None:
    labels = world["labels"]
    joined = labels.join(
        world["transactions"].select(["transaction_id", "bank_id", "timestamp"]),
        keys=["transaction_id", "bank_id"],
    )
    assert joined.num_rows == labels.num_rows  # every label points at a transaction
    delay = _ms(joined, "reported_at") - _ms(joined, "timestamp")
    assert np.all(delay > 0)
    assert np.all(np.diff(_ms(labels, "reported_at")) >= 0)  # labels file in report order


def test_label_delays_in_documented_range(world: dict[str, pa.Table]) -> None:
    fraud = _fraud_with_times(world)
    delay_days = (_ms(fraud, "reported_at") - _ms(fraud, "timestamp")) / DAY_MS
    p50, p90 = np.percentile(delay_days, [50, 90])
    assert DELAY_P50_DAYS[0] <= p50 <= DELAY_P50_DAYS[1]
    assert DELAY_P90_DAYS[0] <= p90 <= DELAY_P90_DAYS[1]
    assert delay_days.max() <= MAX_DELAY_DAYS
    sources = set(fraud.column("source").to_pylist())
    assert sources == {"chargeback", "customer", "analyst"}


def test_every_fraud_labelled_and_some_genuine_confirmed(world: dict[str, pa.Table]) -> None:
    labels = world["labels"]
    assert len(pc.unique(labels.column("transaction_id"))) == labels.num_rows
    genuine = labels.filter(pc.equal(labels.column("is_fraud"), False)).num_rows
    share = genuine / world["transactions"].num_rows
    assert 0.01 <= share <= 0.03  # genuine_label_share = 0.02


def test_label_all_labels_every_transaction_once() -> None:
    config = SimulationConfig(cards=500, days=10, label_all=True)
    tx, labels = simulate(config)
    assert labels.num_rows == tx.num_rows
    assert len(pc.unique(labels.column("transaction_id"))) == tx.num_rows
    joined = labels.join(
        tx.select(["transaction_id", "bank_id", "timestamp"]), ["transaction_id", "bank_id"]
    )
    matured = joined.filter(pc.is_null(joined.column("source")))
    delay = _ms(matured, "reported_at") - _ms(matured, "timestamp")
    assert matured.num_rows > 0
    assert np.all(delay == int(config.label_maturity_days * DAY_MS))
    assert not any(matured.column("is_fraud").to_pylist())


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    runs = {"a": [], "b": [], "c": ["--seed", "7"]}
    for name, extra in runs.items():
        run_cli(tmp_path / name, "--new-typology-day", "10", *extra)
    for file in ("transactions.parquet", "labels.parquet"):
        a, b, c = ((tmp_path / n / file).read_bytes() for n in "abc")
        assert a == b, file
        assert a != c, file


def test_billing_amounts_use_one_currency_per_card() -> None:
    local, _ = simulate(SimulationConfig(cards=500, days=10, amounts="local"))
    billed, _ = simulate(SimulationConfig(cards=500, days=10))  # billing is the default
    assert billed.num_rows == local.num_rows
    pairs = set(
        zip(
            billed.column("card_id").to_pylist(), billed.column("currency").to_pylist(), strict=True
        )
    )
    assert len(pairs) == len(set(billed.column("card_id").to_pylist()))
    assert {c for _, c in pairs} <= {"EUR", "GBP"}
    assert len(set(local.column("currency").to_pylist())) > 2


# ------------------------------------------------------------------------------------- realism


def test_daily_and_weekly_rhythm(world: dict[str, pa.Table]) -> None:
    ts = _ms(world["transactions"], "timestamp")
    hour_cet = (ts // 3_600_000 + 1) % 24
    night = np.isin(hour_cet, [1, 2, 3, 4]).mean()
    midday = np.isin(hour_cet, [11, 12, 13, 14]).mean()
    assert night * 5 < midday
    weekday = (ts // DAY_MS + 3) % 7  # Monday = 0
    per_day = np.bincount(weekday, minlength=7) / np.bincount(
        (np.arange(_start_ms(), _start_ms() + 30 * DAY_MS, DAY_MS) // DAY_MS + 3) % 7, minlength=7
    )
    assert per_day[5] > per_day[6]  # busy Saturday, quiet Sunday
    assert per_day[4] > per_day[1]  # Friday above Tuesday


def test_frauds_stand_out_but_overlap_genuine(world: dict[str, pa.Table]) -> None:
    """Fraud differs from genuine traffic in the ways features can see, without being trivial."""
    tx = world["transactions"]
    fraud = _fraud_with_times(world)
    kind_of = dict(
        zip(
            fraud.column("transaction_id").to_pylist(),
            fraud.column("fraud_type").to_pylist(),
            strict=True,
        )
    )
    ids = tx.column("transaction_id").to_pylist()
    kind = np.array([kind_of.get(i, "genuine") for i in ids])
    amount = tx.column("amount").to_numpy()
    euro = tx.column("currency").to_numpy(zero_copy_only=False) == "EUR"
    foreign = tx.column("country").to_numpy(zero_copy_only=False) != _home_country(tx)
    genuine = kind == "genuine"
    # Genuine traffic has its own travel and cross-border shopping ...
    assert 0.01 < foreign[genuine].mean() < 0.15
    # ... but stolen cards abroad are always abroad, and card testing is mostly tiny amounts.
    assert foreign[kind == "stolen_card_abroad"].all()
    assert np.median(amount[(kind == "card_testing") & euro]) < np.median(amount[genuine & euro])
    assert np.median(amount[(kind == "high_value") & euro]) > np.percentile(
        amount[genuine & euro], 90
    )
    # Genuine amounts reach into high-value territory too (big purchases).
    assert (
        np.percentile(amount[genuine & euro], 99.9)
        > np.median(amount[(kind == "high_value") & euro]) / 4
    )


def _home_country(tx: pa.Table) -> np.ndarray:
    """Each transaction's card's most frequent country."""
    card = tx.column("card_id").combine_chunks().dictionary_encode().indices.to_numpy()
    country = tx.column("country").combine_chunks().dictionary_encode()
    codes = country.indices.to_numpy()
    counts = np.zeros((card.max() + 1, codes.max() + 1), dtype=np.int64)
    np.add.at(counts, (card, codes), 1)
    names = np.array(country.dictionary.to_pylist())
    return names[counts.argmax(axis=1)[card]]


# ------------------------------------------------------------------------ config and helpers


def test_config_rejects_inconsistent_values() -> None:
    with pytest.raises(ValidationError):
        SimulationConfig(days=10, new_typology_day=10)
    with pytest.raises(ValidationError):
        SimulationConfig(start=datetime(2026, 1, 1))  # naive: no offset
    with pytest.raises(ValidationError):
        SimulationConfig(label_maturity_days=30, max_label_delay_days=60)
    assert SimulationConfig(start=datetime(2026, 1, 1, tzinfo=UTC)).start_ms == 1_767_225_600_000


def test_cli_rejects_bad_options(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["simulate", "--out", str(tmp_path), "--days", "5", "--new-typology-day", "9"]
    )
    assert result.exit_code != 0
    assert not (tmp_path / "transactions.parquet").exists()


def test_systematic_counts_track_the_expectation() -> None:
    rng = np.random.default_rng(0)
    expected = np.full(100, 0.37)
    counts = systematic_counts(expected, rng)
    assert np.all(np.abs(np.cumsum(counts) - np.cumsum(expected)) <= 1)


def test_group_sampler_stays_in_its_group() -> None:
    rng = np.random.default_rng(0)
    groups = np.array([0, 1, 0, 2, 1, 0])
    weights = np.array([1.0, 1.0, 2.0, 1.0, 3.0, 1.0])
    sampler = GroupSampler(groups, weights, 3)
    asked = rng.integers(0, 3, 10_000)
    drawn = sampler.sample(rng, asked)
    assert np.all(groups[drawn] == asked)
    # Weights hold within a group: item 4 (weight 3) vs item 1 (weight 1) in group 1.
    in_group_1 = drawn[asked == 1]
    assert 2.5 < np.sum(in_group_1 == 4) / np.sum(in_group_1 == 1) < 3.5
