"""The feature catalog: every feature's name, definition, window and why it catches fraud.

The order here is the column order of every feature matrix, model and feature-log record; the
feature-schema hash in each model manifest is computed from these names. ``docs/features.md`` is
generated from this table (``python -m scoring.features.catalog > docs/features.md``), so the
docs cannot drift from the code.

Windows are exponentially decayed: a "count over 1 d" is Σ exp(-(t - tᵢ)/1 d) over the card's
earlier transactions. Why decayed windows and not exact sliding ones: an exact 30-day window needs
every event of the month in memory (unbounded for busy cards); a decayed window is two floats per
window, is updated in O(1), can be snapshotted exactly, and gives gradient-boosted trees the same
information. Events older than about 5 windows weigh < 1 %.
"""

from __future__ import annotations

from dataclasses import dataclass

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

# Time constants (ms). Kernels index these by position; names below follow the same order.
CARD_WINDOWS = (
    ("10m", 10 * MINUTE_MS),
    ("1h", HOUR_MS),
    ("1d", DAY_MS),
    ("7d", 7 * DAY_MS),
    ("30d", 30 * DAY_MS),
    ("90d", 90 * DAY_MS),
)
ENTITY_WINDOWS = (("1h", HOUR_MS), ("1d", DAY_MS), ("7d", 7 * DAY_MS), ("30d", 30 * DAY_MS))
LABEL_WINDOWS = (("1d", DAY_MS), ("7d", 7 * DAY_MS), ("30d", 30 * DAY_MS))
# Fraud share among all labels (fraud and genuine); the first LABEL_WINDOWS, in the same order.
SHARE_WINDOWS = LABEL_WINDOWS[:2]
# Merchant and terminal features see the entity's events up to the start of the current second:
# transactions of one merchant arrive on every partition of a card-keyed topic, and a stream worker
# can know all of them only up to a point in time that every partition has passed. Labels take
# effect at the end of the second they were reported in (engine.label_effective_ms).
ENTITY_BUCKET_MS = 1_000
RECENT_AMOUNTS = 16  # ring of the card's last amounts, for the median


@dataclass(frozen=True)
class Feature:
    name: str
    family: str
    definition: str
    why: str
    needs: str = ""  # optional input fields; without them the feature is NaN


def _catalog() -> tuple[Feature, ...]:
    f: list[Feature] = [
        Feature(
            "amount",
            "transaction",
            "Amount in major units.",
            "High-value fraud and card testing sit at the two ends.",
        ),
        Feature(
            "hour_of_day",
            "time",
            "UTC hour with fraction (0-24).",
            "Fraud clusters at night, when owners sleep.",
        ),
        Feature(
            "day_of_week",
            "time",
            "0 = Monday ... 6 = Sunday (UTC).",
            "Weekly rhythm of genuine spending.",
        ),
        Feature(
            "channel",
            "transaction",
            "pos=0, ecom=1, atm=2, moto=3.",
            "Card-not-present channels carry most stolen-data fraud.",
            "channel",
        ),
        Feature(
            "card_present",
            "transaction",
            "1 if the card was present, else 0.",
            "Card-not-present fraud.",
            "card_present",
        ),
        Feature(
            "mcc",
            "transaction",
            "Merchant category code as a number.",
            "Fraud concentrates in resellable goods, travel, digital.",
            "mcc",
        ),
    ]
    for window, _ in CARD_WINDOWS:
        f.append(
            Feature(
                f"card_count_{window}",
                "card velocity",
                f"Decayed count of the card's earlier transactions over {window}.",
                "Bursts (card testing, cash-out) raise short-window counts.",
            )
        )
    for window, _ in CARD_WINDOWS:
        f.append(
            Feature(
                f"card_amount_sum_{window}",
                "card velocity",
                f"Decayed sum of the card's earlier amounts over {window}.",
                "Fraudsters drain the card fast.",
            )
        )
    for window in ("1d", "7d", "30d", "90d"):
        f.append(
            Feature(
                f"card_amount_mean_{window}",
                "card velocity",
                f"card_amount_sum_{window} / card_count_{window}; NaN without history.",
                "The card's usual spend level.",
            )
        )
    for window in ("1d", "30d"):
        f.append(
            Feature(
                f"card_amount_max_{window}",
                "card velocity",
                f"Largest earlier amount, decayed over {window}.",
                "A new maximum is unusual for the owner.",
            )
        )
    f += [
        Feature(
            "card_seconds_since_prev",
            "card history",
            "Seconds since the card's previous transaction; NaN for its first.",
            "Rapid sequences are typical of scripted fraud.",
        ),
        Feature(
            "card_tx_total",
            "card history",
            "Transactions seen on the card (within its TTL).",
            "New cards have no history to compare to.",
        ),
        Feature(
            "amount_to_mean_30d",
            "card history",
            "amount / card_amount_mean_30d.",
            "Account takeover and stolen cards spend unlike the owner.",
        ),
        Feature(
            "amount_to_mean_90d",
            "card history",
            "amount / card_amount_mean_90d.",
            "A long baseline that a two-week attack barely moves.",
        ),
        Feature(
            "card_amount_ratio_max_7d",
            "card history",
            "Largest amount / card_amount_mean_90d among the card's earlier transactions, "
            "decayed over 7d.",
            "An attack repeats unusual amounts; one outlier is not yet a pattern.",
        ),
        Feature(
            "card_unusual_count_7d",
            "card history",
            "Decayed count over 7d of earlier transactions above 3x the card's 90d mean.",
            "Counts the repeats of an ongoing compromise.",
        ),
        Feature(
            "amount_to_median_recent",
            "card history",
            f"amount / median of the card's last {RECENT_AMOUNTS} amounts.",
            "Robust to one earlier outlier, unlike the mean.",
        ),
        Feature(
            "amount_zscore_30d",
            "card history",
            "(amount - decayed mean) / decayed std over 30d; NaN with < 2 transactions.",
            "How many standard deviations away from the owner's habit.",
        ),
        Feature(
            "card_new_merchant",
            "novelty",
            "1 if the merchant is not among the card's last 16 distinct merchants.",
            "Fraudsters shop where the owner never does.",
            "merchant_id",
        ),
        Feature(
            "card_new_terminal",
            "novelty",
            "1 if the terminal is not among the card's last 8 distinct terminals.",
            "A compromised card appears at unfamiliar terminals.",
            "terminal_id",
        ),
        Feature(
            "card_new_country",
            "novelty",
            "1 if the country is not among the card's last 4 distinct countries.",
            "Stolen card data is used far from home.",
            "country",
        ),
        Feature(
            "card_new_channel",
            "novelty",
            "1 if the card never used this channel before.",
            "Account takeover moves a card-present owner online.",
            "channel",
        ),
        Feature(
            "card_new_mcc",
            "novelty",
            "1 if the category is not among the card's last 8 distinct categories.",
            "Sudden shift of what is bought.",
            "mcc",
        ),
        Feature(
            "card_country_not_first",
            "novelty",
            "1 if the country differs from the first country the card was used in.",
            "Proxy for 'abroad' without a home-country field.",
            "country",
        ),
    ]
    for entity, field in (("merchant", "merchant_id"), ("terminal", "terminal_id")):
        for window, _ in ENTITY_WINDOWS:
            f.append(
                Feature(
                    f"{entity}_count_{window}",
                    f"{entity} activity",
                    f"Decayed count of earlier transactions at the {entity} over {window}.",
                    "Bursts at one point of sale: compromise or collusion.",
                    field,
                )
            )
        f.append(
            Feature(
                f"{entity}_amount_mean_7d",
                f"{entity} activity",
                f"Decayed mean amount at the {entity} over 7d.",
                "Amount relative to what the point of sale usually takes.",
                field,
            )
        )
        for window, _ in LABEL_WINDOWS:
            f.append(
                Feature(
                    f"{entity}_fraud_{window}",
                    f"{entity} risk",
                    f"Decayed count of fraud labels reported in earlier seconds for "
                    f"transactions at the {entity}, over {window} of report time.",
                    "Compromised merchants/terminals keep producing fraud.",
                    field,
                )
            )
        for window, _ in LABEL_WINDOWS:
            f.append(
                Feature(
                    f"{entity}_fraud_rate_{window}",
                    f"{entity} risk",
                    f"{entity}_fraud_{window} / (1 + {entity}_count_{window}).",
                    "Fraud density, fair to busy and quiet points alike.",
                    field,
                )
            )
        for window, _ in SHARE_WINDOWS:
            f.append(
                Feature(
                    f"{entity}_label_fraud_share_{window}",
                    f"{entity} risk",
                    f"Fraud labels / all labels (fraud and genuine) reported for the {entity}'s "
                    f"transactions, decayed over {window}; NaN without labels.",
                    "Says when a compromise is over: the newest labels there turn genuine.",
                    field,
                )
            )
    f += [
        Feature(
            "card_fraud_labels_30d",
            "card risk",
            "Decayed count of fraud labels on this card reported in an earlier second than the "
            "transaction (a label takes effect at the end of its second), over 30d.",
            "A card with confirmed fraud is likely still compromised.",
        ),
        Feature(
            "card_seconds_since_fraud_label",
            "card risk",
            "Seconds since the last fraud label on this card took effect (the last millisecond "
            "of the second it was reported in); NaN if none.",
            "Recency of confirmed compromise.",
        ),
    ]
    return tuple(f)


CATALOG: tuple[Feature, ...] = _catalog()
FEATURE_NAMES: tuple[str, ...] = tuple(feature.name for feature in CATALOG)
INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}
NUM_FEATURES = len(FEATURE_NAMES)


def markdown() -> str:
    """The catalog as the Markdown page docs/features.md."""
    lines = [
        "# Feature catalog",
        "",
        "Generated from `scoring/features/catalog.py` "
        "(`python -m scoring.features.catalog > docs/features.md`). "
        "Column order = model input order.",
        "",
        "Windows are exponentially decayed with the window as time constant: a count over 1 d is "
        "Σ exp(-Δt / 1 d) over earlier events. Features use only earlier transactions and labels "
        "reported in an earlier second than the transaction: a label takes effect at the last "
        "millisecond of the second it was reported in, where a stream worker applies it once "
        "that second is over. Merchant and terminal features see the entity's events up to the "
        "start of the transaction's second (`ENTITY_BUCKET_MS`), the view a stream worker has of "
        "a merchant whose transactions arrive on every partition; within a second, each event "
        "is decayed to the second's end and rounded to a multiple of 2⁻²⁰, so the sum is exact "
        "whatever order the events arrive in. "
        "A feature whose input field is absent is NaN "
        "(LightGBM routes NaN down a learned branch); nothing else changes.",
        "",
        "| # | name | family | definition | why it catches fraud | needs |",
        "|---|---|---|---|---|---|",
    ]
    for i, feature in enumerate(CATALOG):
        lines.append(
            f"| {i} | `{feature.name}` | {feature.family} | {feature.definition} | {feature.why} "
            f"| {feature.needs or '—'} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
