"""Shadow mode, measured: the served model against the shadow model on the same transactions.

A worker started with ``FRAUD_STREAM__SHADOW_REF`` (e.g. ``challenger``) scores every transaction
with a second model without acting on it, and writes that model's version and score beside the
served ones in the ``feature-log`` record (``scoring.messages.feature_log_records``). This module
turns those records, the ``transactions`` they belong to and the banks' ``labels`` into a report
(``fraudstream models compare``, docs/training.md "Shadow mode"). No Kafka here:
:mod:`training.compare_kafka` reads the topics.

Which rows count (the maturity rule):

* a transaction with a fraud label on the topic is a **fraud**, however young;
* one without a fraud label is **genuine** once it is older than ``maturity_days`` on the clock;
* a younger one without a fraud label is **left out**: its report may still come.

Both models are judged on exactly the same rows, with the trainer's holdout definitions
(:func:`training.trainer_rounds.evaluate`: average precision, AUC, card precision@k, the realised
cost per transaction of the decisions each bank's policy would take on each model's scores, the
decline and review rates). The decisions are recomputed with the configured policy: with the
workers' settings, for the served model they are the ones the worker took, for the shadow model the
ones it would have taken.

The **clock** is event time, as in the trainer: the lowest, over the feature-log partitions that
hold a shadow record, of each partition's newest transaction time — so replays behave like live
traffic and one partition running ahead does not mature everything. ``as_of`` overrides it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from scoring.decision import DecisionPolicy
from scoring.logs import TIMESTAMP
from training.trainer_rounds import DAY_MS, Scorecard, evaluate
from training.trainer_state import RowSet, row_key

SHADOW_FIELD = b'"shadow_score"'

#: The report's metrics, in table order: (key, title, format).
METRICS: tuple[tuple[str, str, str], ...] = (
    ("transactions", "rows", ",d"),
    ("frauds", "frauds", ",d"),
    ("auc_roc", "AUC ROC", ".4f"),
    ("average_precision", "average precision", ".4f"),
    ("card_precision_at_k", "card precision@k", ".4f"),
    ("cost_per_transaction", "cost per transaction", ".4f"),
    ("decline_rate", "decline rate", ".2%"),
    ("review_rate", "review rate", ".2%"),
)


# ------------------------------------------------------------------------------ the feature log


@dataclass
class ShadowLog:
    """Feature-log records that carry a shadow score, as columns (the first record per
    ``(bank_id, transaction_id)``; later ones are counted as duplicates)."""

    transaction_id: list[str] = field(default_factory=list)
    bank_id: list[str | None] = field(default_factory=list)
    timestamp_ms: list[int | None] = field(default_factory=list)
    model_version: list[str | None] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    shadow_model_version: list[str | None] = field(default_factory=list)
    shadow_score: list[float] = field(default_factory=list)
    records: int = 0  # every feature-log record read
    without_shadow: int = 0  # records with no shadow score (no shadow model was running)
    rejected: int = 0  # records that are not JSON objects with an id and both scores
    duplicates: int = 0
    newest_ms: dict[int, int] = field(default_factory=dict)  # partition -> newest timestamp_ms
    _seen: set[str] = field(default_factory=set, repr=False)

    def __len__(self) -> int:
        return len(self.transaction_id)

    def add(self, values: Iterable[bytes | None], partition: int = 0) -> None:
        """Feature-log record values (``scoring.messages.feature_log_records``)."""
        loads = orjson.loads
        for value in values:
            self.records += 1
            if not value or SHADOW_FIELD not in value:  # cheap: most of a record is features
                self.without_shadow += 1
                continue
            try:
                record = loads(value)
                transaction_id = record["transaction_id"]
                raw_shadow = record.get("shadow_score")
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                self.rejected += 1
                continue
            if raw_shadow is None:  # the field is absent or null: no shadow model ran
                self.without_shadow += 1
                continue
            score, shadow = _number(record.get("score")), _number(raw_shadow)
            if not isinstance(transaction_id, str) or score is None or shadow is None:
                self.rejected += 1
                continue
            bank = record.get("bank_id")
            bank = bank if isinstance(bank, str) else None
            key = row_key(bank, transaction_id)
            if key in self._seen:
                self.duplicates += 1
                continue
            self._seen.add(key)
            when = record.get("timestamp_ms")
            when = int(when) if isinstance(when, int | float) and math.isfinite(when) else None
            self.transaction_id.append(transaction_id)
            self.bank_id.append(bank)
            self.timestamp_ms.append(when)
            self.model_version.append(_text(record.get("model_version")))
            self.score.append(score)
            self.shadow_model_version.append(_text(record.get("shadow_model_version")))
            self.shadow_score.append(shadow)
            if when is not None and when > self.newest_ms.get(partition, np.iinfo(np.int64).min):
                self.newest_ms[partition] = when

    def clock_ms(self) -> int | None:
        """Event time: the lowest of the partitions' newest transaction times (module docstring)."""
        return min(self.newest_ms.values()) if self.newest_ms else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# ------------------------------------------------------------------------------ the rows


@dataclass(frozen=True)
class Selection:
    """The rows both models are judged on, and what was left out."""

    rows: RowSet  # in time order; y = fraud label on the topic
    score: np.ndarray  # the served model's scores
    shadow_score: np.ndarray
    champion_versions: dict[str, int]  # served version -> rows
    shadow_versions: dict[str, int]
    clock_ms: int
    maturity_days: float
    since_ms: int | None
    excluded: dict[str, int]  # reason -> rows


def select_rows(
    log: ShadowLog,
    transactions: pa.Table,
    labels: pa.Table,
    *,
    maturity_days: float,
    clock_ms: int | None = None,
    since_ms: int | None = None,
    shadow_version: str | None = None,
) -> Selection:
    """Join the shadow records with their transactions and the fraud labels, and keep the rows
    the maturity rule allows (module docstring). ``transactions`` and ``labels`` are decoded
    topic records (``scoring.wire``); a transaction resent keeps its first record. ``clock_ms``
    defaults to :meth:`ShadowLog.clock_ms`."""
    clock = clock_ms if clock_ms is not None else log.clock_ms()
    excluded = Counter[str]()
    n = len(log)
    if clock is None:  # nothing with a time: no row can be judged
        clock = 0
    tx_index: dict[str, int] = {}
    ids = transactions.column("transaction_id").to_pylist()
    banks = transactions.column("bank_id").to_pylist()
    for i, (bank, transaction_id) in enumerate(zip(banks, ids, strict=True)):
        tx_index.setdefault(row_key(bank, transaction_id), i)
    fraud_keys, fraud_any_bank = _fraud_labels(labels)

    take: list[int] = []  # positions in the log
    tx_rows: list[int] = []
    y: list[int] = []
    maturity_ms = round(maturity_days * DAY_MS)
    tx_ts = np.asarray(
        transactions.column("timestamp").cast(TIMESTAMP).cast(pa.int64()).to_numpy(), np.int64
    )
    for i in range(n):
        if shadow_version is not None and log.shadow_model_version[i] != shadow_version:
            excluded["other_shadow_version"] += 1
            continue
        key = row_key(log.bank_id[i], log.transaction_id[i])
        row = tx_index.get(key)
        if row is None:
            excluded["no_transaction_record"] += 1
            continue
        when = int(tx_ts[row])
        if since_ms is not None and when < since_ms:
            excluded["before_since"] += 1
            continue
        fraud = key in fraud_keys or log.transaction_id[i] in fraud_any_bank
        if not fraud and not when < clock - maturity_ms:
            excluded["young_unlabelled"] += 1
            continue
        take.append(i)
        tx_rows.append(row)
        y.append(int(fraud))

    picked = transactions.take(pa.array(tx_rows, pa.int64()))
    ts = tx_ts[np.asarray(tx_rows, np.int64)] if tx_rows else np.empty(0, np.int64)
    # time order, ties by id: the same order training/evaluate.py sees a sorted score file in
    ids_taken = [log.transaction_id[i] for i in take]
    order = np.lexsort((np.asarray(ids_taken, dtype=str), ts)) if take else np.empty(0, int)
    picked = picked.take(pa.array(order, pa.int64()))
    take = [take[i] for i in order.tolist()]
    card_ids = picked.column("card_id")
    cards = card_ids.combine_chunks().dictionary_encode().indices.to_numpy()
    rows = RowSet(
        X=np.empty((len(take), 0)),
        y=np.asarray([y[i] for i in order.tolist()], np.int8),
        ts_ms=ts[order],
        amount=np.asarray(picked.column("amount").to_numpy(), np.float64),
        bank=np.asarray(picked.column("bank_id").to_pylist(), dtype=object),
        card=np.asarray(cards, np.int32),
        card_id=np.asarray(card_ids.to_pylist(), dtype=object),
        merchant=np.asarray(picked.column("merchant_id").to_pylist(), dtype=object),
        country=np.asarray(picked.column("country").to_pylist(), dtype=object),
        model_version=np.asarray([log.model_version[i] for i in take], dtype=object),
    )
    return Selection(
        rows=rows,
        score=np.asarray([log.score[i] for i in take], np.float64),
        shadow_score=np.asarray([log.shadow_score[i] for i in take], np.float64),
        champion_versions=_counts(log.model_version[i] for i in take),
        shadow_versions=_counts(log.shadow_model_version[i] for i in take),
        clock_ms=clock,
        maturity_days=maturity_days,
        since_ms=since_ms,
        excluded=dict(excluded),
    )


def _fraud_labels(labels: pa.Table) -> tuple[set[str], set[str]]:
    """Fraud labels as row keys (a label naming a bank matches that bank's transaction only) and
    as bare ids (a label naming no bank matches the id in every bank): the offline join's rule
    (``training.dataset.fraud_targets``) and the trainer's."""
    keys: set[str] = set()
    any_bank: set[str] = set()
    if labels.num_rows == 0:
        return keys, any_bank
    fraud = labels.column("is_fraud").to_pylist()
    ids = labels.column("transaction_id").to_pylist()
    banks = labels.column("bank_id").to_pylist()
    for is_fraud, transaction_id, bank in zip(fraud, ids, banks, strict=True):
        if not is_fraud:
            continue
        if bank is None:
            any_bank.add(transaction_id)
        else:
            keys.add(row_key(bank, transaction_id))
    return keys, any_bank


def _counts(values: Iterable[str | None]) -> dict[str, int]:
    return dict(Counter(v or "?" for v in values).most_common())


# ------------------------------------------------------------------------------ the report


@dataclass(frozen=True)
class Comparison:
    selection: Selection
    champion: Scorecard
    shadow: Scorecard
    k: int

    def as_dict(self) -> dict[str, Any]:
        """The JSON line ``fraudstream models compare`` prints (NaN → null)."""
        s = self.selection

        def card(scorecard: Scorecard, versions: dict[str, int]) -> dict[str, Any]:
            values = {k: _finite(v) for k, v in scorecard.as_dict().items()}
            values["transactions"] = scorecard.transactions
            values["frauds"] = scorecard.frauds
            return {"versions": versions, **values}

        return {
            "rows": len(s.rows),
            "frauds": s.rows.frauds,
            "clock": _iso(s.clock_ms),
            "maturity_days": s.maturity_days,
            "since": None if s.since_ms is None else _iso(s.since_ms),
            "k": self.k,
            "excluded": s.excluded,
            "champion": card(self.champion, s.champion_versions),
            "shadow": card(self.shadow, s.shadow_versions),
            "delta": {
                key: _finite(getattr(self.shadow, key) - getattr(self.champion, key))
                for key, _title, _spec in METRICS[2:]
            },
        }

    def table_rows(self) -> list[tuple[str, str, str, str]]:
        """(metric, champion, shadow, shadow − champion) as text."""
        out = []
        for key, title, spec in METRICS:
            a, b = getattr(self.champion, key), getattr(self.shadow, key)
            delta = "" if key in ("transactions", "frauds") else _format(b - a, "+" + spec)
            if key == "card_precision_at_k":
                title = f"card precision@{self.k}"
            out.append((title, _format(a, spec), _format(b, spec), delta))
        return out


def compare(selection: Selection, policy: DecisionPolicy, k: int = 100) -> Comparison:
    """Both models on the selected rows, with the trainer's holdout metrics."""
    return Comparison(
        selection=selection,
        champion=evaluate(selection.score, selection.rows, policy, k),
        shadow=evaluate(selection.shadow_score, selection.rows, policy, k),
        k=k,
    )


def _finite(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value


def _format(value: float, spec: str) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return format(value, spec)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def summary_lines(comparison: Comparison) -> Sequence[str]:
    """What the command says about the rows below the table."""
    s = comparison.selection
    lines = [
        f"{len(s.rows):,} transactions scored by both ({s.rows.frauds:,} frauds), clock "
        f"{_iso(s.clock_ms)}, maturity {s.maturity_days:g} days"
        + (f", since {_iso(s.since_ms)}" if s.since_ms is not None else ""),
        "served: " + ", ".join(f"{v} ({n:,})" for v, n in s.champion_versions.items()),
        "shadow: " + ", ".join(f"{v} ({n:,})" for v, n in s.shadow_versions.items()),
    ]
    if s.excluded:
        lines.append(
            "left out: " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in s.excluded.items())
        )
    return lines
