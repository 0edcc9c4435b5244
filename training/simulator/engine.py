"""``simulate(config)``: population → genuine traffic → fraud → labels → Arrow tables."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

from training.simulator.batch import TxBatch
from training.simulator.config import SimulationConfig
from training.simulator.labels import make_labels
from training.simulator.legit import genuine_day
from training.simulator.population import DAY_MS, Population, build_population
from training.simulator.sampling import stream
from training.simulator.schedule import incidents_by_day
from training.simulator.tables import labels_table, transaction_ids, transactions_table
from training.simulator.typologies import ALL, FraudContext

# progress(stage, done, total): called as each stage advances; the CLI draws it as a bar.
Progress = Callable[[str, int, int], None]


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


def simulate(
    config: SimulationConfig | None = None, *, progress: Progress | None = None
) -> tuple[pa.Table, pa.Table]:
    """Simulate card traffic and its delayed labels.

    Returns ``(transactions, labels)``: transactions in ``scoring.logs.TRANSACTION_SCHEMA`` sorted
    by timestamp; labels in ``LABEL_SCHEMA`` plus ``fraud_type`` (null for genuine), sorted by
    ``reported_at``. Deterministic for a given config.
    """
    config = config or SimulationConfig()
    report = progress or _no_progress
    report("population", 0, 1)
    population = build_population(config)
    report("population", 1, 1)

    genuine = _genuine(config, population, report)
    frauds = _frauds(config, population, genuine, report)
    report("labels", 0, 2)
    tx = TxBatch.concat([genuine, frauds])
    # Stable sort on time: ties keep generation order, which is itself deterministic.
    tx = tx.take(np.argsort(tx.ts, kind="stable"))
    rows = make_labels(config, population, tx, stream(config.seed, "labels"))
    report("labels", 1, 2)
    ids = transaction_ids(population, tx)
    transactions = transactions_table(population, tx, ids, config.amounts)
    labels = labels_table(population, tx, ids, rows)
    report("labels", 2, 2)
    return transactions, labels


def _genuine(config: SimulationConfig, population: Population, report: Progress) -> TxBatch:
    days: list[TxBatch] = []
    for day in range(config.days):
        # A stream per day: a longer simulation shares its first days with a shorter one.
        days.append(genuine_day(config, population, day, stream(config.seed, f"genuine.{day}")))
        report("genuine traffic", day + 1, config.days)
    genuine = TxBatch.concat(days)
    return genuine.take(np.argsort(genuine.ts, kind="stable"))


def _frauds(
    config: SimulationConfig, population: Population, genuine: TxBatch, report: Progress
) -> TxBatch:
    day = (genuine.ts - config.start_ms) // DAY_MS
    per_day = np.bincount(day, minlength=config.days)[: config.days].astype(np.float64)
    incidents = incidents_by_day(config, per_day, stream(config.seed, "schedule"))
    batches: list[TxBatch] = []
    for code, typology in enumerate(ALL):
        report("fraud", code, len(ALL))
        if incidents[code].sum() == 0:
            continue
        ctx = FraudContext(
            config=config,
            population=population,
            genuine=genuine,
            code=code,
            lead_days=typology.lead_days,
        )
        batch = typology.generate(
            ctx, incidents[code], stream(config.seed, f"fraud.{typology.name}")
        )
        batches.append(batch)
    report("fraud", len(ALL), len(ALL))
    return TxBatch.concat(batches)
