"""From integer codes to the contract's Arrow tables: ids, local currency, strings, schemas."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scoring.logs import LABEL_SCHEMA, TRANSACTION_SCHEMA
from training.simulator import catalog as cat
from training.simulator.batch import GENUINE, TxBatch
from training.simulator.labels import NO_SOURCE, SOURCES, LabelRows
from training.simulator.population import Population
from training.simulator.typologies import NAMES

LABELS_OUT_SCHEMA = LABEL_SCHEMA.append(pa.field("fraud_type", pa.string()))


def tokens(prefix: str, count: int, width: int) -> pa.Array:
    """``prefix_000123`` style ids: a letter prefix keeps them from ever looking like a PAN."""
    width = max(width, len(str(max(count - 1, 0))))
    return pa.array([f"{prefix}_{i:0{width}d}" for i in range(count)], pa.string())


def transaction_ids(population: Population, tx: TxBatch) -> pa.Array:
    """``tx_<bank>_<n>``: n counts the bank's transactions in time order, so ids are unique and
    say nothing about fraud."""
    bank = population.cards.bank[tx.card]
    order = np.argsort(bank, kind="stable")
    counts = np.bincount(bank, minlength=population.banks.country.size)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sequence = np.empty(bank.size, dtype=np.int64)
    sequence[order] = np.arange(bank.size) - starts[bank[order]]
    prefixes = pa.array([f"tx_{b}_" for b in population.banks.ids], pa.string()).take(bank)
    numbers = pc.utf8_lpad(pa.array(sequence).cast(pa.string()), 9, "0")
    return pc.binary_join_element_wise(prefixes, numbers, "")


def local_amounts(population: Population, tx: TxBatch) -> np.ndarray:
    """EUR → the merchant's currency; ATM withdrawals rounded to notes; cents (or yen) rounded."""
    country = population.merchants.country[tx.merchant]
    rate = cat.COUNTRY_EUR_RATE[country]
    amount = tx.amount_eur * rate
    atm = tx.channel == cat.ATM
    step = 10.0 * 10.0 ** np.maximum(0.0, np.floor(np.log10(rate)))
    amount[atm] = np.maximum(step[atm], np.round(amount[atm] / step[atm]) * step[atm])
    return _round_money(amount, cat.COUNTRY_DECIMALS[country])


def billing_amounts(population: Population, tx: TxBatch, local: np.ndarray) -> np.ndarray:
    """The rounded local amount converted to the card's home currency (as on the statement)."""
    merchant_rate = cat.COUNTRY_EUR_RATE[population.merchants.country[tx.merchant]]
    home = population.cards.country[tx.card]
    billed = local / merchant_rate * cat.COUNTRY_EUR_RATE[home]
    return _round_money(billed, cat.COUNTRY_DECIMALS[home])


def _round_money(amount: np.ndarray, decimals: np.ndarray) -> np.ndarray:
    rounded = np.where(decimals == 0, np.round(amount), np.round(amount, 2))
    return np.maximum(rounded, 10.0 ** (-decimals))  # never 0: the contract wants amount > 0


def transactions_table(
    population: Population, tx: TxBatch, ids: pa.Array, amounts: str = "local"
) -> pa.Table:
    cards, merchants = population.cards, population.merchants
    card = pa.array(tx.card)
    merchant = pa.array(tx.merchant)
    country = merchants.country[tx.merchant]
    amount = local_amounts(population, tx)
    currency_country = country
    if amounts == "billing":
        amount = billing_amounts(population, tx, amount)
        currency_country = cards.country[tx.card]
    columns = {
        "transaction_id": ids,
        "card_id": tokens("card", len(cards), 6).take(card),
        "timestamp": pa.array(tx.ts, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        "amount": pa.array(amount, pa.float64()),
        "bank_id": pa.array(population.banks.ids, pa.string()).take(pa.array(cards.bank[tx.card])),
        "currency": pa.array(cat.COUNTRY_CURRENCY[currency_country], pa.string()),
        "merchant_id": tokens("mer", len(merchants), 6).take(merchant),
        "terminal_id": tokens("term", merchants.terminal_merchant.size, 7).take(
            pa.array(tx.terminal)
        ),
        "mcc": pa.array(cat.MCC_CODES[merchants.category[tx.merchant]], pa.string()),
        "country": pa.array(cat.COUNTRY_CODES[country], pa.string()),
        "channel": pa.array(np.array(cat.CHANNELS)[tx.channel], pa.string()),
        "card_present": pa.array((tx.channel == cat.POS) | (tx.channel == cat.ATM)),
        "customer_id": tokens("cust", int(cards.customer.max()) + 1, 6).take(
            pa.array(cards.customer[tx.card])
        ),
    }
    return pa.table(columns, schema=TRANSACTION_SCHEMA)


def labels_table(population: Population, tx: TxBatch, ids: pa.Array, rows: LabelRows) -> pa.Table:
    take = pa.array(rows.tx)
    source_names = np.array([*SOURCES, ""], dtype=object)
    source = source_names[np.where(rows.source == NO_SOURCE, len(SOURCES), rows.source)]
    kind = tx.fraud_type[rows.tx]
    kind_names = np.array([*NAMES, ""], dtype=object)
    fraud_type = kind_names[np.where(kind == GENUINE, len(NAMES), kind)]
    columns = {
        "transaction_id": ids.take(take),
        "is_fraud": pa.array(rows.is_fraud),
        "reported_at": pa.array(rows.reported_at, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        "bank_id": pa.array(population.banks.ids, pa.string()).take(
            pa.array(population.cards.bank[tx.card[rows.tx]])
        ),
        "source": pa.array(source, pa.string(), mask=rows.source == NO_SOURCE),
        "fraud_type": pa.array(fraud_type, pa.string(), mask=kind == GENUINE),
    }
    return pa.table(columns, schema=LABELS_OUT_SCHEMA)
