"""BIN attack (the new typology): enumerated card numbers of one issuer hit one online shop.

Unlike card testing (many probes on one card), a BIN attack is one probe on many cards: 15 +
Poisson(25) cards of the same bank each get one tiny payment (20 %: two) at the same small online
shop within 45 minutes, mostly with the same amount. Card-level features see a single small
online payment; the signal is at the merchant and terminal (a burst of distinct cards). It is
switched on at ``new_typology_day`` to test how models cope with a pattern absent from training.
"""

from __future__ import annotations

import numpy as np

from training.simulator.batch import TxBatch
from training.simulator.rhythms import HOUR_MS
from training.simulator.typologies.base import (
    FraudContext,
    Typology,
    day_start_ms,
    fraud_batch,
    incident_days,
    repeat_per_incident,
)

CARDS_MIN, CARDS_EXTRA = 15, 25.0
SECOND_SHARE = 0.2
ATTACK_MINUTES = 45.0
AMOUNTS = np.array([0.5, 1.0, 1.5, 2.0, 2.5])


def generate(ctx: FraudContext, per_day: np.ndarray, rng: np.random.Generator) -> TxBatch:
    day = incident_days(ctx, per_day)
    pop = ctx.population
    attacks = day.size
    start = day_start_ms(ctx, day) + (rng.random(attacks) * 24 * HOUR_MS).astype(np.int64)
    bank = pop.cards.bank[rng.integers(0, len(pop.cards), attacks)]  # banks by size
    shop = pop.pools.pick_home_or_abroad(
        rng, "testing", pop.banks.country[bank], rng.random(attacks) < 0.5
    )
    amount = AMOUNTS[rng.integers(0, AMOUNTS.size, attacks)]

    cards: list[np.ndarray] = []
    attack_of_card: list[np.ndarray] = []
    for a in range(attacks):
        # One iteration per attack (a handful per month): pick distinct cards of one issuer.
        issued = np.flatnonzero(pop.cards.bank == bank[a])
        k = min(issued.size, CARDS_MIN + int(rng.poisson(CARDS_EXTRA)))
        cards.append(np.sort(rng.choice(issued, size=k, replace=False)))
        attack_of_card.append(np.full(k, a))
    if not cards:
        return TxBatch.empty()
    card = np.concatenate(cards)
    attack = np.concatenate(attack_of_card)

    counts = 1 + (rng.random(card.size) < SECOND_SHARE)
    victim, _ = repeat_per_incident(counts)
    m = victim.size
    ts = start[attack[victim]] + (rng.random(m) * ATTACK_MINUTES * 60_000).astype(np.int64)
    same = rng.random(m) < 0.8
    probe = np.where(same, amount[attack[victim]], rng.uniform(0.5, 3.0, m))
    return fraud_batch(
        ctx,
        rng,
        card=card[victim],
        ts=ts,
        amount_eur=probe,
        merchant=shop[attack[victim]],
        incident=victim,  # one incident per card: each cardholder's report is its own
    )


TYPOLOGY = Typology(
    name="bin_attack",
    mean_transactions=(CARDS_MIN + CARDS_EXTRA) * (1 + SECOND_SHARE),
    generate=generate,
    sources=(0.70, 0.15, 0.15),
)
