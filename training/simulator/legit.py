"""Genuine traffic, one simulated day at a time: who buys, when, where, how much.

Every draw comes from the card's own habits (rate, amounts, hours, favourite merchants), with the
genuine surprises a fraud model must not flag blindly: exploring new merchants, trips abroad,
cross-border online shopping, occasional big purchases and tiny digital-goods payments.
"""

from __future__ import annotations

import numpy as np

from training.simulator import catalog as cat
from training.simulator.batch import GENUINE, TxBatch
from training.simulator.config import SimulationConfig
from training.simulator.population import (
    DAY_MS,
    Population,
    merchant_channel,
    merchant_terminal,
)
from training.simulator.rhythms import card_hours, to_utc_ms, weekday

BIG_PURCHASE_RATE = 0.004  # share of genuine transactions that are a big-ticket purchase
BIG_PURCHASE_MEDIAN = 2.5  # ... times the card's typical amount at that category
MICRO_PAYMENT_SHARE = 0.15  # share of online-retail purchases that are 0.5–6 EUR digital goods


def genuine_day(
    config: SimulationConfig, population: Population, day: int, rng: np.random.Generator
) -> TxBatch:
    cards = population.cards
    dow = weekday(config.start_ms, day)
    weekend = dow >= 5
    rate = cards.rate * cat.WEEKDAY_FACTOR[dow] * (cards.weekend if weekend else 1.0)
    card = np.repeat(np.arange(len(cards)), rng.poisson(rate))
    day_start = config.start_ms + day * DAY_MS

    hours = card_hours(rng, cards, card, weekend)
    home = cards.country[card]
    # Trip membership is decided at the home-time instant; at the edge of a trip the hour
    # offset does not matter.
    location = _location(config, population, card, to_utc_ms(day_start, hours, home))
    ts = to_utc_ms(day_start, hours, location) + rng.integers(0, 1000, card.size)

    merchant = _merchants(population, card, home, location, rng)
    amount = _amounts(population, card, merchant, rng)
    big = rng.random(card.size) < BIG_PURCHASE_RATE
    merchant[big] = population.pools.pick(rng, "big_ticket", location[big])
    category = population.merchants.category[merchant[big]]
    amount[big] = (
        np.exp(cards.log_amount[card[big]])
        * cat.CATEGORY_AMOUNT_SCALE[category]
        * BIG_PURCHASE_MEDIAN
        * np.exp(0.5 * rng.standard_normal(int(big.sum())))
    )
    return TxBatch(
        card=card,
        ts=ts,
        amount_eur=amount,
        merchant=merchant,
        terminal=merchant_terminal(rng, population.merchants, merchant),
        channel=merchant_channel(rng, population.merchants, merchant),
        fraud_type=np.full(card.size, GENUINE, dtype=np.int8),
        incident=np.full(card.size, -1, dtype=np.int64),
    )


def _location(
    config: SimulationConfig, population: Population, card: np.ndarray, ts: np.ndarray
) -> np.ndarray:
    """Country the cardholder is in at ``ts``: home, or the destination of a trip in progress."""
    trips = population.trips
    location = population.cards.country[card].copy()
    if trips.card.size == 0:
        return location
    # One sorted key per (card, time) finds the latest trip started before ts in O(log n).
    # Times relative to the start are in [0, span): card * span + time sorts by (card, time) and
    # stays within int64 for the largest configs (1e7 cards x 3660 days).
    span = np.int64(config.days * DAY_MS)
    trip_key = trips.card * span + (trips.start - config.start_ms)
    key = card * span + np.clip(ts - config.start_ms, 0, span - 1)
    index = np.searchsorted(trip_key, key, side="right") - 1
    valid = index >= 0
    index = np.maximum(index, 0)
    away = (
        valid & (trips.card[index] == card) & (ts < trips.end[index]) & (ts >= trips.start[index])
    )
    location[away] = trips.country[index[away]]
    return location


def _merchants(
    population: Population,
    card: np.ndarray,
    home: np.ndarray,
    location: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    cards, pools, merchants = population.cards, population.pools, population.merchants
    n = card.size
    # Favourites first: the slot whose cumulative probability the uniform draw falls under.
    slot = (rng.random(n)[:, None] > cards.favourite_cum[card]).sum(axis=1)
    merchant = cards.favourites[card, np.minimum(slot, cards.favourite_cum.shape[1] - 1)]
    explore = rng.random(n) >= cards.loyalty[card]
    merchant[explore] = pools.pick(rng, "any", home[explore])
    # Some exploring online purchases cross the border (marketplaces abroad).
    abroad = explore & merchants.online[merchant] & (rng.random(n) < cards.foreign_online[card])
    merchant[abroad] = pools.pick(rng, "online_abroad", np.zeros(int(abroad.sum()), np.int64))
    # Travellers buy in person where they are; online shopping carries on as at home.
    away = (location != home) & ~merchants.online[merchant]
    merchant[away] = pools.pick(rng, "physical", location[away])
    return merchant


def _amounts(
    population: Population, card: np.ndarray, merchant: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    cards, merchants = population.cards, population.merchants
    category = merchants.category[merchant]
    amount = np.exp(
        cards.log_amount[card] + cards.amount_sigma[card] * rng.standard_normal(card.size)
    )
    amount *= cat.CATEGORY_AMOUNT_SCALE[category]
    # Apps, songs, small top-ups: genuine tiny online payments that look like card testing.
    micro = (
        merchants.online[merchant]
        & (cat.MCC_CODES[category] == "5999")
        & (rng.random(card.size) < MICRO_PAYMENT_SHARE)
    )
    amount[micro] = rng.uniform(0.5, 6.0, int(micro.sum()))
    return amount
