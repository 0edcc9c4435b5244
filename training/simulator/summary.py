"""What a simulated log contains: size, fraud rate, typology mix, label delays."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from training.simulator.population import DAY_MS

PERCENTILES = (10, 50, 90, 99)


@dataclass(frozen=True)
class Summary:
    transactions: int
    cards: int
    frauds: int
    fraud_labels: int
    genuine_labels: int
    by_typology: dict[str, int] = field(default_factory=dict)
    delay_days: dict[str, float] = field(default_factory=dict)  # p10.. p99, max of fraud labels
    first_day_of: dict[str, int] = field(default_factory=dict)  # typology -> first day index

    @property
    def fraud_rate(self) -> float:
        return self.frauds / self.transactions if self.transactions else 0.0


def summarize(transactions: pa.Table, labels: pa.Table, start_ms: int | None = None) -> Summary:
    """Summary of a (transactions, labels) pair as :func:`simulate` returns or the files hold.

    ``start_ms`` is the first simulated day (for ``first_day_of``); unset: the UTC midnight
    before the first transaction.
    """
    fraud = labels.filter(pc.equal(labels.column("is_fraud"), True))
    joined = fraud.join(
        transactions.select(["transaction_id", "bank_id", "timestamp"]),
        keys=["transaction_id", "bank_id"],
        join_type="inner",
    )
    ts = joined.column("timestamp").cast(pa.int64()).to_numpy()
    reported = joined.column("reported_at").cast(pa.int64()).to_numpy()
    delay = (reported - ts) / DAY_MS
    delays: dict[str, float] = {}
    if delay.size:
        delays = {f"p{q}": float(np.percentile(delay, q)) for q in PERCENTILES}
        delays["max"] = float(delay.max())

    kinds = joined.column("fraud_type").to_numpy(zero_copy_only=False)
    start = transactions.column("timestamp").cast(pa.int64()).to_numpy()
    if start_ms is None:
        first = int(start.min()) if start.size else 0
        start_ms = first - first % DAY_MS
    by_typology: dict[str, int] = {}
    first_day: dict[str, int] = {}
    for name in sorted(set(kinds.tolist())):
        mask = kinds == name
        by_typology[str(name)] = int(mask.sum())
        first_day[str(name)] = int((ts[mask].min() - start_ms) // DAY_MS)
    return Summary(
        transactions=transactions.num_rows,
        cards=len(pc.unique(transactions.column("card_id"))),
        frauds=fraud.num_rows,
        fraud_labels=fraud.num_rows,
        genuine_labels=labels.num_rows - fraud.num_rows,
        by_typology=by_typology,
        delay_days=delays,
        first_day_of=first_day,
    )
