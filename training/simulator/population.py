"""The simulated world: banks, cardholders and their cards, merchants and their terminals, trips.

Each card carries its own habits (how often, how much, when, where, which merchants); legitimate
traffic is drawn from those habits and fraud is recognisable as a departure from them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.simulator import catalog as cat
from training.simulator.config import SimulationConfig
from training.simulator.sampling import GroupSampler, stream

FAVOURITES = 6  # favourite-merchant slots per card; unequal weights make the effective set smaller
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Banks:
    country: np.ndarray  # int64 country index of each bank's home market

    @property
    def ids(self) -> list[str]:
        return [f"bank{b + 1:02d}" for b in range(self.country.size)]


@dataclass(frozen=True)
class Cards:
    bank: np.ndarray  # int64
    customer: np.ndarray  # int64; a customer may hold several cards of one bank
    country: np.ndarray  # int64 home country
    rate: np.ndarray  # mean genuine transactions per day
    weekend: np.ndarray  # weekend activity multiplier
    log_amount: np.ndarray  # log of the card's typical amount (EUR)
    amount_sigma: np.ndarray  # log-sd of its amounts
    hour_shift: np.ndarray  # hours added to the population's daily rhythm (early/late people)
    peak_hour: np.ndarray  # a personal preferred hour (commute, lunch, evening)
    peak_share: np.ndarray  # share of its transactions at the preferred hour
    favourites: np.ndarray  # (n, FAVOURITES) merchant indexes
    favourite_cum: np.ndarray  # (n, FAVOURITES) cumulative choice probabilities
    loyalty: np.ndarray  # probability a purchase goes to a favourite merchant
    foreign_online: np.ndarray  # probability an exploring online purchase goes abroad

    def __len__(self) -> int:
        return int(self.bank.size)


@dataclass(frozen=True)
class Merchants:
    country: np.ndarray  # int64
    category: np.ndarray  # int64 index into catalog.CATEGORIES
    online: np.ndarray  # bool: sells online only (ecom/moto), one virtual terminal
    popularity: np.ndarray  # relative share of genuine traffic
    first_terminal: np.ndarray  # int64 index of its first terminal
    terminals: np.ndarray  # int64 number of terminals
    terminal_merchant: np.ndarray  # int64 merchant of each terminal

    def __len__(self) -> int:
        return int(self.country.size)


@dataclass(frozen=True)
class Trips:
    """Genuine travel: while away, a card's in-person purchases happen in ``country``."""

    card: np.ndarray  # int64, sorted by (card, start)
    start: np.ndarray  # int64 ms
    end: np.ndarray  # int64 ms
    country: np.ndarray  # int64 destination


class MerchantPools:
    """Named weighted pools of merchants, grouped by country (or zone) for vectorised picks."""

    def __init__(self, merchants: Merchants) -> None:
        m = merchants
        n_countries = len(cat.COUNTRIES)
        physical = ~m.online
        big = cat.CATEGORY_BIG_TICKET[m.category]
        cash_out_online = m.online & cat.CATEGORY_CASH_OUT[m.category]
        abroad = cat.COUNTRY_ZONE[m.country] != cat.ZONE_HOME
        # Fraudsters test cards at small, weakly protected shops, not at the big marketplaces.
        small = 1.0 / np.sqrt(m.popularity)
        self._pools: dict[str, tuple[GroupSampler, np.ndarray]] = {}
        # Grouped by country.
        self._add("any", np.ones(len(m), bool), m.country, m.popularity, n_countries)
        self._add("physical", physical, m.country, m.popularity, n_countries)
        self._add("atm", m.category == cat.CATEGORY_ATM, m.country, m.popularity, n_countries)
        self._add("online", m.online, m.country, m.popularity, n_countries)
        self._add("big_ticket", big, m.country, m.popularity, n_countries)
        self._add("cash_out", cash_out_online, m.country, m.popularity, n_countries)
        self._add("testing", m.online, m.country, small, n_countries)
        # One group (0): every merchant outside the issuing market.
        zero = np.zeros(len(m), np.int64)
        self._add("online_abroad", m.online & abroad, zero, m.popularity, 1)
        self._add("cash_out_abroad", cash_out_online & abroad, zero, m.popularity, 1)
        self._add("testing_abroad", m.online & abroad, zero, small, 1)

    def _add(
        self, name: str, mask: np.ndarray, group: np.ndarray, weight: np.ndarray, n: int
    ) -> None:
        index = np.flatnonzero(mask)
        self._pools[name] = (GroupSampler(group[index], weight[index], n), index)

    def pick(self, rng: np.random.Generator, pool: str, group: np.ndarray) -> np.ndarray:
        """One merchant per entry of ``group`` (a country, or 0 for ``*_abroad`` pools).

        A country with no merchant in ``pool`` falls back to any merchant of that country.
        """
        sampler, index = self._pools[pool]
        group = np.asarray(group, dtype=np.int64)
        out = np.empty(group.size, dtype=np.int64)
        ok = sampler.size(group) > 0
        out[ok] = index[sampler.sample(rng, group[ok])]
        if not ok.all():
            if pool.endswith("_abroad"):
                # Never happens: the US and CN online shops are in every world (_base_merchants).
                raise ValueError(f"merchant pool {pool} is empty")
            any_sampler, any_index = self._pools["any"]
            out[~ok] = any_index[any_sampler.sample(rng, group[~ok])]
        return out

    def pick_home_or_abroad(
        self, rng: np.random.Generator, pool: str, country: np.ndarray, abroad: np.ndarray
    ) -> np.ndarray:
        """From ``pool`` in ``country``, or from ``pool``_abroad where ``abroad`` is set."""
        out = self.pick(rng, pool, country)
        out[abroad] = self.pick(rng, f"{pool}_abroad", np.zeros(int(abroad.sum()), np.int64))
        return out


@dataclass(frozen=True)
class Population:
    banks: Banks
    cards: Cards
    merchants: Merchants
    trips: Trips
    pools: MerchantPools


def build_population(config: SimulationConfig) -> Population:
    banks = _banks(config)
    merchants = _merchants(config, banks)
    pools = MerchantPools(merchants)
    cards = _cards(config, banks, pools)
    trips = _trips(config, cards)
    return Population(banks=banks, cards=cards, merchants=merchants, trips=trips, pools=pools)


def _home_countries() -> np.ndarray:
    return np.flatnonzero(cat.COUNTRY_ZONE == cat.ZONE_HOME)


def _banks(config: SimulationConfig) -> Banks:
    home = _home_countries()
    return Banks(country=home[np.arange(config.banks) % home.size])


def _cards(config: SimulationConfig, banks: Banks, pools: MerchantPools) -> Cards:
    rng = stream(config.seed, "population.cards")
    n = config.cards
    # ~13% of customers hold a second card: consecutive cards share a customer (and its bank).
    new_customer = rng.random(n) < 0.87
    new_customer[0] = True
    customer = np.cumsum(new_customer) - 1
    n_customers = int(customer[-1]) + 1
    # Bigger banks first: bank b holds a share proportional to 1/sqrt(b+1).
    bank_weight = 1.0 / np.sqrt(np.arange(1, banks.country.size + 1))
    customer_bank = rng.choice(
        banks.country.size, size=n_customers, p=bank_weight / bank_weight.sum()
    )
    # Most customers live in their bank's market; some bank across the border.
    home = _home_countries()
    customer_country = np.where(
        rng.random(n_customers) < 0.9,
        banks.country[customer_bank],
        home[rng.integers(0, home.size, n_customers)],
    )
    bank = customer_bank[customer]
    country = customer_country[customer]

    rate = np.minimum(config.transactions_per_card_day * np.exp(0.7 * rng.standard_normal(n)), 20.0)
    profile = cat.HOURLY_WEEKDAY / cat.HOURLY_WEEKDAY.sum()
    peak_hour = rng.choice(24, size=n, p=profile) + rng.random(n)
    favourites = pools.pick(rng, "any", np.repeat(country, FAVOURITES)).reshape(n, FAVOURITES)
    # Geometric favourite weights: steep decay = one go-to shop, flat = a handful used evenly.
    decay = rng.uniform(0.2, 1.0, n)
    weights = np.exp(-decay[:, None] * np.arange(FAVOURITES)[None, :])
    favourite_cum = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    favourite_cum[:, -1] = 1.0
    return Cards(
        bank=bank,
        customer=customer,
        country=country,
        rate=rate,
        weekend=np.exp(0.25 * rng.standard_normal(n)),
        log_amount=rng.normal(np.log(25.0), 0.45, n),
        amount_sigma=rng.uniform(0.45, 0.9, n),
        hour_shift=rng.normal(0.0, 1.0, n),
        peak_hour=peak_hour,
        peak_share=rng.uniform(0.1, 0.5, n),
        favourites=favourites,
        favourite_cum=favourite_cum,
        loyalty=rng.uniform(0.55, 0.85, n),
        foreign_online=rng.uniform(0.0, 0.15, n),
    )


def _base_merchants() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merchants every world has, so no pool a stage draws from is ever empty.

    Per country: a physical grocery, restaurant and ATM. Per home country also a physical
    electronics shop and an online shop; and online shops in the US and CN for cross-border
    e-commerce.
    """
    codes = cat.MCC_CODES.tolist()
    country: list[int] = []
    category: list[int] = []
    online: list[bool] = []

    def add(c: int, mcc: str, is_online: bool) -> None:
        country.append(c)
        category.append(codes.index(mcc))
        online.append(is_online)

    for c, info in enumerate(cat.COUNTRIES):
        for mcc in ("5411", "5812", "6011"):
            add(c, mcc, False)
        if info.zone == "home":
            add(c, "5732", False)
            add(c, "5999", True)
        if info.code in ("US", "CN"):
            add(c, "5999", True)
    return np.array(country), np.array(category), np.array(online)


def _merchants(config: SimulationConfig, banks: Banks) -> Merchants:
    rng = stream(config.seed, "population.merchants")
    base_country, base_category, base_online = _base_merchants()
    n = max(config.merchant_count, base_country.size)
    extra = n - base_country.size

    # Home-market merchants follow where the cards are (bank markets get more); near and far
    # countries share the rest evenly.
    zone = cat.COUNTRY_ZONE
    weight = np.zeros(len(cat.COUNTRIES))
    for z, share in cat.MERCHANT_ZONE_SHARE.items():
        members = np.flatnonzero(zone == z)
        local = np.ones(members.size)
        if z == cat.ZONE_HOME:
            local += 3.0 * np.isin(members, banks.country)
        weight[members] = share * local / local.sum()
    country = np.concatenate([base_country, rng.choice(weight.size, extra, p=weight)])
    share = cat.CATEGORY_MERCHANT_SHARE / cat.CATEGORY_MERCHANT_SHARE.sum()
    category = np.concatenate([base_category, rng.choice(share.size, extra, p=share)])
    online = np.concatenate(
        [base_online, rng.random(extra) < cat.CATEGORY_ONLINE_SHARE[category[base_country.size :]]]
    )
    online &= category != cat.CATEGORY_ATM

    # Popularity: a heavy tail within each category, scaled so each category's total traffic
    # matches catalog.CATEGORY_TRAFFIC.
    per_merchant = cat.CATEGORY_TRAFFIC / cat.CATEGORY_MERCHANT_SHARE
    popularity = per_merchant[category] * np.exp(rng.normal(0.0, 1.0, n))
    terminals = np.where(online, 1, 1 + rng.poisson(cat.CATEGORY_TERMINALS[category]))
    first_terminal = np.concatenate([[0], np.cumsum(terminals)[:-1]])
    return Merchants(
        country=country,
        category=category,
        online=online,
        popularity=popularity,
        first_terminal=first_terminal,
        terminals=terminals,
        terminal_merchant=np.repeat(np.arange(n), terminals),
    )


def _trips(config: SimulationConfig, cards: Cards) -> Trips:
    """Trips abroad: 2–10 days, to another home-market country (40 %), near (35 %), far (25 %)."""
    rng = stream(config.seed, "population.trips")
    n_cards = len(cards)
    counts = rng.poisson(config.trips_per_card_year / 365.0 * config.days, n_cards)
    card = np.repeat(np.arange(n_cards), counts)
    start = config.start_ms + (rng.random(card.size) * config.days * DAY_MS).astype(np.int64)
    end = start + (rng.uniform(2.0, 10.0, card.size) * DAY_MS).astype(np.int64)
    zone = rng.choice(3, size=card.size, p=[0.40, 0.35, 0.25])
    # Destination: uniform among that zone's countries, never the card's own country.
    dest = np.empty(card.size, dtype=np.int64)
    for z in range(3):
        members = np.flatnonzero(np.equal(cat.COUNTRY_ZONE, z))
        sel = zone == z
        dest[sel] = members[rng.integers(0, members.size, int(sel.sum()))]
    home = cards.country[card]
    clash = dest == home
    dest[clash] = np.flatnonzero(cat.COUNTRY_ZONE == cat.ZONE_NEAR)[0]
    order = np.lexsort((start, card))
    card, start, end, dest = card[order], start[order], end[order], dest[order]
    # One trip at a time: drop a trip that starts before the card's previous one ends.
    keep = np.ones(card.size, dtype=bool)
    while True:
        last_end = np.full(card.size, -1, dtype=np.int64)
        kept = np.flatnonzero(keep)
        prev = kept[:-1]
        nxt = kept[1:]
        same = card[prev] == card[nxt]
        last_end[nxt[same]] = end[prev[same]]
        overlap = keep & (start < last_end)
        if not overlap.any():
            break
        keep &= ~overlap
    return Trips(card=card[keep], start=start[keep], end=end[keep], country=dest[keep])


def merchant_channel(
    rng: np.random.Generator, merchants: Merchants, merchant: np.ndarray
) -> np.ndarray:
    """The channel a transaction at ``merchant`` uses: fixed by the merchant, moto now and then."""
    category = merchants.category[merchant]
    online = merchants.online[merchant]
    channel = np.where(online, cat.ECOM, cat.POS).astype(np.int8)
    channel[category == cat.CATEGORY_ATM] = cat.ATM
    moto = online & (rng.random(merchant.size) < cat.CATEGORY_MOTO_SHARE[category])
    channel[moto] = cat.MOTO
    return channel


def merchant_terminal(
    rng: np.random.Generator, merchants: Merchants, merchant: np.ndarray
) -> np.ndarray:
    """A uniformly chosen terminal of each merchant."""
    offset = (rng.random(merchant.size) * merchants.terminals[merchant]).astype(np.int64)
    return merchants.first_terminal[merchant] + offset
