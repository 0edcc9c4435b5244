"""Static reference data of the simulated world: countries, merchant categories, daily rhythm.

Everything here is a plain table so docs/simulator.md can quote it and a reader can tune it in one
place. Numbers are plausible orders of magnitude for a European card issuer, not calibrated
statistics of any real portfolio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ---------------------------------------------------------------------------------- countries


@dataclass(frozen=True)
class Country:
    code: str  # ISO 3166 alpha-2
    currency: str  # ISO 4217
    eur_rate: float  # units of local currency per EUR (fixed; the simulator has no FX drift)
    utc_offset: int  # hours; no daylight saving time, so local hours stay simple
    zone: str  # home: where the banks issue | near: short trips | far: long trips, fraud rings


COUNTRIES: tuple[Country, ...] = (
    # The issuing market: banks and almost all cardholders live here.
    Country("FR", "EUR", 1.0, 1, "home"),
    Country("DE", "EUR", 1.0, 1, "home"),
    Country("ES", "EUR", 1.0, 1, "home"),
    Country("IT", "EUR", 1.0, 1, "home"),
    Country("NL", "EUR", 1.0, 1, "home"),
    Country("BE", "EUR", 1.0, 1, "home"),
    Country("GB", "GBP", 0.85, 0, "home"),
    # Short-trip destinations.
    Country("PT", "EUR", 1.0, 0, "near"),
    Country("AT", "EUR", 1.0, 1, "near"),
    Country("IE", "EUR", 1.0, 0, "near"),
    Country("GR", "EUR", 1.0, 2, "near"),
    Country("CH", "CHF", 0.95, 1, "near"),
    Country("PL", "PLN", 4.3, 1, "near"),
    Country("RO", "RON", 5.0, 2, "near"),
    # Long-haul destinations, large online markets, and where stolen card data is often used.
    Country("US", "USD", 1.08, -5, "far"),
    Country("BR", "BRL", 5.9, -3, "far"),
    Country("MX", "MXN", 19.0, -6, "far"),
    Country("NG", "NGN", 1650.0, 1, "far"),
    Country("AE", "AED", 4.0, 4, "far"),
    Country("IN", "INR", 90.0, 5, "far"),
    Country("TH", "THB", 38.0, 7, "far"),
    Country("CN", "CNY", 7.8, 8, "far"),
    Country("JP", "JPY", 160.0, 9, "far"),
)

COUNTRY_CODES = np.array([c.code for c in COUNTRIES])
COUNTRY_CURRENCY = np.array([c.currency for c in COUNTRIES])
COUNTRY_EUR_RATE = np.array([c.eur_rate for c in COUNTRIES])
COUNTRY_UTC_OFFSET = np.array([c.utc_offset for c in COUNTRIES], dtype=np.int64)
ZONE_HOME, ZONE_NEAR, ZONE_FAR = 0, 1, 2
COUNTRY_ZONE = np.array(
    [{"home": ZONE_HOME, "near": ZONE_NEAR, "far": ZONE_FAR}[c.zone] for c in COUNTRIES],
    dtype=np.int8,
)
# Currencies without minor units are rounded to whole units.
COUNTRY_DECIMALS = np.array([0 if c.currency == "JPY" else 2 for c in COUNTRIES], dtype=np.int64)

# Share of the merchant population located in each zone. Foreign merchants exist so genuine
# travellers and genuine cross-border online shopping overlap with fraud abroad.
MERCHANT_ZONE_SHARE = {ZONE_HOME: 0.80, ZONE_NEAR: 0.08, ZONE_FAR: 0.12}

# ----------------------------------------------------------------------------------- channels

CHANNELS = ("pos", "ecom", "atm", "moto")
POS, ECOM, ATM, MOTO = 0, 1, 2, 3

# ------------------------------------------------------------------------- merchant categories


@dataclass(frozen=True)
class Category:
    mcc: str
    name: str
    merchant_share: float  # share of merchants in this category
    traffic: float  # relative share of genuine transactions going to the category
    online_share: float  # probability that a merchant of this category sells online only
    moto_share: float  # share of an online merchant's transactions taken by mail/phone order
    amount_scale: float  # multiplies the card's own typical amount
    terminals: float  # mean extra terminals of a physical merchant (1 + Poisson(terminals))
    big_ticket: bool  # where genuine big purchases and high-value fraud happen


CATEGORIES: tuple[Category, ...] = (
    Category("5411", "grocery", 0.20, 0.26, 0.03, 0.00, 1.0, 3.0, False),
    Category("5541", "fuel", 0.08, 0.09, 0.00, 0.00, 1.6, 2.0, False),
    Category("5812", "restaurants", 0.16, 0.12, 0.05, 0.00, 1.1, 1.0, False),
    Category("5814", "fast_food", 0.08, 0.08, 0.10, 0.00, 0.45, 1.0, False),
    Category("5912", "pharmacy", 0.05, 0.04, 0.10, 0.00, 0.8, 1.0, False),
    Category("5311", "department_store", 0.05, 0.06, 0.40, 0.01, 1.8, 4.0, False),
    Category("5999", "online_retail", 0.10, 0.10, 0.75, 0.02, 1.0, 0.5, False),
    Category("4121", "taxi_rideshare", 0.04, 0.05, 0.60, 0.00, 0.9, 0.0, False),
    Category("5732", "electronics", 0.05, 0.03, 0.50, 0.02, 3.5, 2.0, True),
    Category("5944", "jewelry", 0.02, 0.005, 0.25, 0.03, 6.0, 0.5, True),
    Category("4511", "airlines", 0.02, 0.015, 0.85, 0.06, 8.0, 1.0, True),
    Category("7011", "hotels", 0.04, 0.02, 0.40, 0.05, 5.0, 1.0, True),
    Category("6011", "atm", 0.11, 0.10, 0.00, 0.00, 2.5, 0.5, False),
)

MCC_CODES = np.array([c.mcc for c in CATEGORIES])
CATEGORY_MERCHANT_SHARE = np.array([c.merchant_share for c in CATEGORIES])
CATEGORY_TRAFFIC = np.array([c.traffic for c in CATEGORIES])
CATEGORY_ONLINE_SHARE = np.array([c.online_share for c in CATEGORIES])
CATEGORY_MOTO_SHARE = np.array([c.moto_share for c in CATEGORIES])
CATEGORY_AMOUNT_SCALE = np.array([c.amount_scale for c in CATEGORIES])
CATEGORY_TERMINALS = np.array([c.terminals for c in CATEGORIES])
CATEGORY_BIG_TICKET = np.array([c.big_ticket for c in CATEGORIES])
CATEGORY_ATM = MCC_CODES.tolist().index("6011")
# Categories that fraudsters cash out in: resellable goods and services.
CASH_OUT_MCCS = ("5732", "5944", "5311", "5999", "4511")
CATEGORY_CASH_OUT = np.isin(MCC_CODES, CASH_OUT_MCCS)

# ------------------------------------------------------------------------------------ rhythms

# Relative transaction intensity per local hour (0..23) on a weekday and on a weekend day:
# quiet nights, lunch and evening peaks; weekends start later and stay out later.
HOURLY_WEEKDAY = np.array(
    [0.15, 0.08, 0.05, 0.04, 0.04, 0.08, 0.30, 0.70, 1.00, 1.10, 1.20, 1.40,
     1.70, 1.50, 1.20, 1.20, 1.30, 1.60, 1.80, 1.60, 1.20, 0.90, 0.60, 0.35]
)  # fmt: skip
HOURLY_WEEKEND = np.array(
    [0.30, 0.20, 0.12, 0.06, 0.04, 0.04, 0.10, 0.25, 0.50, 0.90, 1.30, 1.60,
     1.80, 1.70, 1.50, 1.40, 1.40, 1.50, 1.60, 1.50, 1.30, 1.00, 0.75, 0.50]
)  # fmt: skip
# Activity multiplier per day of week, Monday first: busy Friday/Saturday, quiet Sunday.
WEEKDAY_FACTOR = np.array([0.95, 0.95, 1.00, 1.00, 1.15, 1.20, 0.75])
