"""The handbook's published baseline and its train/delay/test protocol, on any of our logs.

Features, as chapter 3 "Baseline feature transformation" of the handbook describes them (15 in all):

* ``amount`` of the transaction;
* ``is_weekend``: the transaction falls on a Saturday or Sunday; ``is_night``: its hour is 0-6;
* per card (the handbook's customer), for w in 1, 7, 30 days: the number of the card's transactions
  and their mean amount in the window (t - w days, t], the current transaction included;
* per terminal, for w in 1, 7, 30 days: the number of the terminal's transactions and the share of
  them that were fraud, in the window (t - 7 - w days, t - 7 days]: shifted back by the 7-day label
  delay, because only labels older than that are known. An empty window has risk 0.

The protocol (chapter 3 "Baseline fraud detection system", chapter 5 "prequential validation"):
train on 7 days, leave a 7-day gap for labels to arrive, test on the 7 following days. From each
test day the cards already known to be compromised are removed: cards with a fraud in the training
week or in the gap whose label was known before the test day began (fraud on a day up to test day
- delay - 1). Repeating that with the whole window shifted by 7 days gives the prequential folds.

The model is gradient-boosted trees with the settings of the handbook's XGBoost baseline (XGBoost's
defaults: 100 trees of depth 6, min child weight 1, L2 1) translated to LightGBM (num_leaves 64 =
2^6 at max_depth 6), except the learning rate: 0.1 instead of 0.3. Both are in the grid of the
handbook's model-selection chapter; choosing among that grid by average precision on *validation*
folds (the test folds moved back 14 days, as the handbook does) picks 0.1, and LightGBM at 0.3 with
so few positives (~550 per training week) is erratic (AP 0.44-0.65 across the grid). See README.md.

Terminal risk uses the labels of the transactions in the delayed window, as the handbook does, not
each label's own ``reported_at``: the two agree when every label is reported 7 days after its
transaction (the handbook's and the held-out data's setting).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from benchmarks.accuracy import metrics
from scoring.logs import TIMESTAMP

MS_PER_DAY = 86_400_000
WINDOWS_DAYS = (1, 7, 30)
LABEL_DELAY_DAYS = 7

FEATURES: tuple[str, ...] = (
    "amount",
    "is_weekend",
    "is_night",
    *(f"card_{name}_{w}d" for w in WINDOWS_DAYS for name in ("nb_tx", "avg_amount")),
    *(f"terminal_{name}_{w}d" for w in WINDOWS_DAYS for name in ("nb_tx", "risk")),
)

# XGBoost's defaults (what the handbook's baseline used) in LightGBM's names; learning rate from
# validation over the handbook's grid (module docstring).
MODEL_PARAMS: dict[str, object] = {
    "n_estimators": 100,
    "learning_rate": 0.1,
    "max_depth": 6,
    "num_leaves": 64,
    "min_child_weight": 1.0,
    "min_child_samples": 1,
    "reg_lambda": 1.0,
    "subsample": 1.0,
    "colsample_bytree": 1.0,
}


@dataclass(frozen=True)
class Log:
    """A transactions log with its labels, as the arrays the baseline and protocol need."""

    transaction_id: pa.Array
    card: np.ndarray  # int64 code per card_id
    terminal: np.ndarray  # int64 code per terminal_id
    timestamp_ms: np.ndarray  # int64 epoch ms
    amount: np.ndarray  # float64
    is_fraud: np.ndarray  # bool: any fraud label for the transaction
    origin_ms: int  # midnight UTC of the first transaction's day: day 0

    @property
    def day(self) -> np.ndarray:
        return ((self.timestamp_ms - self.origin_ms) // MS_PER_DAY).astype(np.int64)

    def __len__(self) -> int:
        return len(self.timestamp_ms)


def load_log(transactions: pa.Table, labels: pa.Table) -> Log:
    """Join a transactions table (read_transactions) with its labels (read_labels).

    A transaction with no fraud label is genuine, the contract's rule once labels have matured.
    """
    if transactions.column("terminal_id").null_count:
        raise ValueError("the handbook baseline needs terminal_id on every transaction")
    ts = transactions.column("timestamp").cast(TIMESTAMP).cast(pa.int64()).to_numpy()
    fraud_ids = labels.filter(pc.equal(labels.column("is_fraud"), True)).column("transaction_id")
    is_fraud = pc.is_in(transactions.column("transaction_id"), value_set=fraud_ids.combine_chunks())
    return Log(
        transaction_id=transactions.column("transaction_id").combine_chunks(),
        card=_codes(transactions.column("card_id")),
        terminal=_codes(transactions.column("terminal_id")),
        timestamp_ms=ts.astype(np.int64),
        amount=transactions.column("amount").to_numpy().astype(np.float64),
        is_fraud=is_fraud.to_numpy(zero_copy_only=False).astype(bool),
        origin_ms=int(ts.min() // MS_PER_DAY * MS_PER_DAY) if len(ts) else 0,
    )


def _codes(column: pa.ChunkedArray) -> np.ndarray:
    return column.combine_chunks().dictionary_encode().indices.to_numpy().astype(np.int64)


# --------------------------------------------------------------------------------------- features


def handbook_features(log: Log) -> np.ndarray:
    """The 15 baseline features of every transaction, shape (n, len(FEATURES)), float64."""
    ts = log.timestamp_ms
    seconds_of_day = (ts // 1000) % 86_400
    weekday = (ts // MS_PER_DAY + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    columns = [
        log.amount,
        (weekday >= 5).astype(np.float64),
        (seconds_of_day // 3600 <= 6).astype(np.float64),
        *_card_windows(log),
        *_terminal_windows(log),
    ]
    return np.column_stack(columns)


def _card_windows(log: Log) -> list[np.ndarray]:
    windows = _GroupWindows(log.card, log.timestamp_ms)
    out: list[np.ndarray] = []
    for w in WINDOWS_DAYS:
        count, total = windows.sums(log.amount, since_ms=w * MS_PER_DAY, until_ms=0)
        out += [count, np.divide(total, count, out=np.zeros_like(total), where=count > 0)]
    return out


def _terminal_windows(log: Log) -> list[np.ndarray]:
    windows = _GroupWindows(log.terminal, log.timestamp_ms)
    delay = LABEL_DELAY_DAYS * MS_PER_DAY
    out: list[np.ndarray] = []
    for w in WINDOWS_DAYS:
        count, frauds = windows.sums(
            log.is_fraud.astype(np.float64), since_ms=delay + w * MS_PER_DAY, until_ms=delay
        )
        out += [count, np.divide(frauds, count, out=np.zeros_like(frauds), where=count > 0)]
    return out


class _GroupWindows:
    """Sliding-window counts and sums per group, over time, with no Python loop over rows.

    Rows are sorted by (group, time) and keyed by ``group * stride + time`` so that one global
    ``searchsorted`` finds each row's window bounds without crossing into another group (the stride
    exceeds the log's time span plus the longest look-back). Ties in time are ordered by row index,
    so a window "up to now" counts the earlier rows with the same timestamp and the current one,
    like the handbook's pandas rolling windows do.
    """

    def __init__(self, group: np.ndarray, timestamp_ms: np.ndarray) -> None:
        rel = timestamp_ms - (timestamp_ms.min() if len(timestamp_ms) else 0)
        self.stride = int(rel.max(initial=0)) + 64 * MS_PER_DAY
        self.order = np.lexsort((np.arange(len(group)), rel, group))
        self.key = group[self.order] * self.stride + rel[self.order]

    def sums(
        self, values: np.ndarray, *, since_ms: int, until_ms: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per row: (count, sum of values) over the group's rows in (t - since, t - until].

        ``until_ms == 0`` means "up to and including this row"; otherwise rows at exactly
        t - until are included and later ones are not.
        """
        if since_ms >= 64 * MS_PER_DAY:
            raise ValueError("look-back longer than the key stride allows")
        n = len(self.key)
        lo = np.searchsorted(self.key, self.key - since_ms, side="right")
        if until_ms == 0:
            hi = np.arange(1, n + 1)
        else:
            hi = np.searchsorted(self.key, self.key - until_ms, side="right")
        cum = np.concatenate([[0.0], np.cumsum(values[self.order])])
        count_sorted = (hi - lo).astype(np.float64)
        sum_sorted = cum[hi] - cum[lo]
        count, total = np.empty(n), np.empty(n)
        count[self.order], total[self.order] = count_sorted, sum_sorted
        return count, total


# --------------------------------------------------------------------------------------- protocol


@dataclass(frozen=True)
class Fold:
    """One train / delay / test split, in whole days counted from the log's day 0."""

    train_start_day: int
    train_days: int = 7
    delay_days: int = LABEL_DELAY_DAYS
    test_days: int = 7

    @property
    def test_start_day(self) -> int:
        return self.train_start_day + self.train_days + self.delay_days

    @property
    def test_end_day(self) -> int:  # exclusive
        return self.test_start_day + self.test_days

    def shifted(self, weeks: int) -> Fold:
        return Fold(
            self.train_start_day + 7 * weeks, self.train_days, self.delay_days, self.test_days
        )


def prequential_folds(first: Fold, weeks: int) -> list[Fold]:
    """``weeks`` consecutive folds, each shifted by a week (the handbook's prequential scheme)."""
    return [first.shifted(i) for i in range(weeks)]


def train_rows(log: Log, fold: Fold) -> np.ndarray:
    day = log.day
    end = fold.train_start_day + fold.train_days
    return np.flatnonzero((day >= fold.train_start_day) & (day < end))


def test_rows(log: Log, fold: Fold) -> np.ndarray:
    """Test transactions, minus the cards already known compromised when each test day starts.

    Known compromised at test day D: a fraud on a day in [train start, D - delay - 1], i.e. one
    whose label (reported 7 days later) arrived before D. Frauds before the training week are not
    counted, as in the handbook.
    """
    day = log.day
    in_test = (day >= fold.test_start_day) & (day < fold.test_end_day)
    first_fraud = _first_fraud_day(log, since_day=fold.train_start_day)
    known = first_fraud[log.card] <= day - fold.delay_days - 1
    return np.flatnonzero(in_test & ~known)


def _first_fraud_day(log: Log, since_day: int) -> np.ndarray:
    """Per card code: the first day >= since_day with a fraud (a huge number when none)."""
    day = log.day
    first = np.full(int(log.card.max(initial=-1)) + 1, np.iinfo(np.int64).max // 2)
    frauds = log.is_fraud & (day >= since_day)
    np.minimum.at(first, log.card[frauds], day[frauds])
    return first


def check_fold_fits(log: Log, fold: Fold) -> None:
    n_days = int(log.day.max(initial=-1)) + 1
    if fold.train_start_day < 0 or fold.test_end_day > n_days:
        raise ValueError(
            f"fold trains from day {fold.train_start_day} and tests up to day "
            f"{fold.test_end_day - 1}, but the log covers days 0-{n_days - 1}"
        )


# ------------------------------------------------------------------------------------------ model


def train_model(X: np.ndarray, y: np.ndarray, seed: int = 0) -> lgb.LGBMClassifier:
    model = lgb.LGBMClassifier(
        **MODEL_PARAMS,  # type: ignore[arg-type]
        random_state=seed,
        n_jobs=2,
        deterministic=True,
        force_row_wise=True,
        verbose=-1,
    )
    model.fit(X, y)
    return model


def predict(model: lgb.LGBMClassifier, X: np.ndarray) -> np.ndarray:
    """Fraud probability of each row."""
    return np.asarray(model.predict_proba(X))[:, 1]


@dataclass(frozen=True)
class FoldResult:
    fold: Fold
    train_transactions: int
    train_frauds: int
    test_transactions: int
    test_frauds: int
    scores: metrics.Scores
    seconds: float
    extra: dict[str, object] = field(default_factory=dict)


def run_baseline(
    log: Log, folds: Iterable[Fold], *, k: int = 100, seed: int = 0
) -> list[FoldResult]:
    """Train the baseline on each fold's training week and evaluate it on its test week."""
    X = handbook_features(log)
    results: list[FoldResult] = []
    for fold in folds:
        check_fold_fits(log, fold)
        started = time.perf_counter()
        train, test = train_rows(log, fold), test_rows(log, fold)
        model = train_model(X[train], log.is_fraud[train], seed=seed)
        score = predict(model, X[test])
        results.append(
            FoldResult(
                fold=fold,
                train_transactions=len(train),
                train_frauds=int(log.is_fraud[train].sum()),
                test_transactions=len(test),
                test_frauds=int(log.is_fraud[test].sum()),
                scores=metrics.evaluate(
                    log.card[test], log.day[test], log.is_fraud[test], score, k
                ),
                seconds=time.perf_counter() - started,
            )
        )
    return results
