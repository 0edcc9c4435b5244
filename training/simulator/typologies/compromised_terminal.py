"""Compromised terminal: a shop's terminal is skimmed or run by a colluding employee for weeks.

Two traces, both labelled ``compromised_terminal``:

* at the terminal itself, during the 7–28 day window, fraudulent in-person payments with other
  people's card data (1 + Poisson(0.4 per window day)): the "terminal risk" pattern, where a
  terminal's recent fraud rate (from labels as they arrive) predicts its next frauds;
* cards genuinely used there during the window are skimmed: up to 2 + Poisson(2) of them are cloned
  and cashed out 1–20 days later, at ATMs and shops at home or abroad.
"""

from __future__ import annotations

import numpy as np

from training.simulator import catalog as cat
from training.simulator.batch import TxBatch
from training.simulator.population import DAY_MS, merchant_terminal
from training.simulator.rhythms import HOUR_MS
from training.simulator.sampling import GroupSampler
from training.simulator.typologies.base import (
    FraudContext,
    Typology,
    day_start_ms,
    fraud_batch,
    incident_days,
    repeat_per_incident,
    typical_amount,
    victims_uniform,
)

WINDOW_DAYS = (7.0, 28.0)
ON_SITE_PER_DAY = 0.4
VICTIMS_MIN, VICTIMS_EXTRA = 2, 2.0
CLONE_EXTRA = 1.5  # cloned-card transactions per victim: 1 + Poisson(1.5)
CLONE_DELAY_DAYS = (1.0, 20.0)
CLONE_ABROAD_SHARE = 0.25
# Busy terminals almost always see enough distinct cards, so nominal victims are (nearly) all
# found: measured 18.2 transactions per incident against 18 nominal.
MEAN_TRANSACTIONS = (
    1 + ON_SITE_PER_DAY * sum(WINDOW_DAYS) / 2 + (VICTIMS_MIN + VICTIMS_EXTRA) * (1 + CLONE_EXTRA)
)


def generate(ctx: FraudContext, per_day: np.ndarray, rng: np.random.Generator) -> TxBatch:
    day = incident_days(ctx, per_day)
    n = day.size
    pop = ctx.population
    # Target shops where the cardholders are, in proportion to traffic (busy shops are skimmed).
    country = pop.cards.country[victims_uniform(ctx, n, rng)]
    shop = pop.pools.pick(rng, "physical", country)
    terminal = merchant_terminal(rng, pop.merchants, shop)
    start = day_start_ms(ctx, day) + (rng.random(n) * DAY_MS).astype(np.int64)
    end = start + (rng.uniform(*WINDOW_DAYS, n) * DAY_MS).astype(np.int64)

    on_site = _on_site(ctx, rng, shop, terminal, start, end)
    clones = _clones(ctx, rng, terminal, start, end, first_incident=len(on_site.card))
    return TxBatch.concat([on_site, clones])


def _on_site(
    ctx: FraudContext,
    rng: np.random.Generator,
    shop: np.ndarray,
    terminal: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
) -> TxBatch:
    """Fraudulent payments at the compromised terminal; each is its own incident (own card)."""
    days = (end - start) / DAY_MS
    counts = 1 + rng.poisson(ON_SITE_PER_DAY * days)
    owner, _ = repeat_per_incident(counts)
    m = owner.size
    # Card data bought for a local terminal is mostly local: cards of the shop's country.
    cards = ctx.population.cards
    by_country = GroupSampler(cards.country, np.ones(len(cards)), len(cat.COUNTRIES))
    shop_country = ctx.population.merchants.country[shop[owner]]
    card = victims_uniform(ctx, m, rng)
    local = by_country.size(shop_country) > 0
    card[local] = by_country.sample(rng, shop_country[local])
    ts = start[owner] + (rng.random(m) * (end - start)[owner]).astype(np.int64)
    category = ctx.population.merchants.category[shop[owner]]
    amount = (
        typical_amount(ctx, card)
        * cat.CATEGORY_AMOUNT_SCALE[category]
        * 2.5
        * np.exp(0.5 * rng.standard_normal(m))
    )
    return fraud_batch(
        ctx,
        rng,
        card=card,
        ts=ts,
        amount_eur=amount,
        merchant=shop[owner],
        terminal=terminal[owner],
        incident=np.arange(m),
    )


def _clones(
    ctx: FraudContext,
    rng: np.random.Generator,
    terminal: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    first_incident: int,
) -> TxBatch:
    """Cloned-card cash-outs of cards that paid at a compromised terminal during its window."""
    victim_card, skimmed_at = _skimmed(ctx, rng, terminal, start, end)
    pop = ctx.population
    counts = 1 + rng.poisson(CLONE_EXTRA, victim_card.size)
    victim, _ = repeat_per_incident(counts)
    m = victim.size
    card = victim_card[victim]
    delay = rng.uniform(*CLONE_DELAY_DAYS, victim_card.size) * DAY_MS
    ts = skimmed_at[victim] + (delay[victim] + rng.random(m) * 2 * DAY_MS).astype(np.int64)
    home = pop.cards.country[card]
    where = home.copy()
    abroad = rng.random(victim_card.size)[victim] < CLONE_ABROAD_SHARE
    far = np.flatnonzero(cat.COUNTRY_ZONE != cat.ZONE_HOME)
    where[abroad] = far[rng.integers(0, far.size, int(abroad.sum()))]
    atm = rng.random(m) < 0.5
    merchant = np.where(
        atm, pop.pools.pick(rng, "atm", where), pop.pools.pick(rng, "physical", where)
    )
    amount = np.where(
        pop.merchants.category[merchant] == cat.CATEGORY_ATM,
        250.0 * np.exp(0.4 * rng.standard_normal(m)),
        typical_amount(ctx, card) * 3.0 * np.exp(0.5 * rng.standard_normal(m)),
    )
    # Cash-outs happen at night more than shoppers do: uniform hours, UTC.
    ts = ts - ts % DAY_MS + (rng.random(m) * 24 * HOUR_MS).astype(np.int64)
    return fraud_batch(
        ctx,
        rng,
        card=card,
        ts=ts,
        amount_eur=amount,
        merchant=merchant,
        incident=first_incident + victim,
    )


def _skimmed(
    ctx: FraudContext,
    rng: np.random.Generator,
    terminal: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(card, time) of the first genuine visits of distinct cards to each window's terminal."""
    genuine = ctx.genuine
    # Genuine transactions ordered by (terminal, time): each window is one contiguous slice.
    order = np.lexsort((genuine.ts, genuine.terminal))
    key_terminal = genuine.terminal[order]
    key_ts = genuine.ts[order]
    wanted = VICTIMS_MIN + rng.poisson(VICTIMS_EXTRA, terminal.size)
    cards: list[np.ndarray] = []
    times: list[np.ndarray] = []
    for t, lo_ts, hi_ts, k in zip(terminal, start, end, wanted, strict=True):
        # One iteration per compromised terminal (tens per month), not per transaction.
        lo = np.searchsorted(key_terminal, t, side="left")
        hi = np.searchsorted(key_terminal, t, side="right")
        a = lo + np.searchsorted(key_ts[lo:hi], lo_ts, side="left")
        b = lo + np.searchsorted(key_ts[lo:hi], hi_ts, side="left")
        seen_cards = genuine.card[order[a:b]]
        _, first = np.unique(seen_cards, return_index=True)
        pick = np.sort(first)[:k]
        cards.append(seen_cards[pick])
        times.append(key_ts[a:b][pick])
    if not cards:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(cards), np.concatenate(times)


TYPOLOGY = Typology(
    name="compromised_terminal",
    mean_transactions=MEAN_TRANSACTIONS,
    generate=generate,
    sources=(0.15, 0.35, 0.50),
    lead_days=int(WINDOW_DAYS[1] + CLONE_DELAY_DAYS[1]),
)
