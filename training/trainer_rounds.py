"""One training round of the incremental trainer, without Kafka (docs/training.md).

Given the matured rows of the window as of the trainer's event-time clock, a round:

1. plans the periods (:func:`plan_round`): the **holdout** is the most recent matured period that
   no model trained on — ``[max(horizon − eval_days, champion's training end), horizon)`` with
   ``horizon = clock − label_maturity_days``; challengers learn only from earlier rows;
2. trains the challengers: **continued** — the champion's booster plus new trees fitted on the rows
   since the champion's training window ended (LightGBM ``init_model``); **fresh** — a new model on
   the sliding window (``training.fit.fit``: time-ordered validation, a small grid);
3. scores the holdout with the champion and each challenger and measures average precision, card
   precision@k, the realised cost per transaction of the decisions the bank's policy would take,
   and the decline and review rates (:func:`evaluate`);
4. decides (:func:`decide`): the best challenger is promoted only if its average precision beats
   the champion's by ``promote_margin`` and every guardrail holds; otherwise the champion stays and
   the reason is returned;
5. publishes the winner: registers it (compiled, manifest with parent, window, metrics, digests),
   loads it back (digests checked) and holds the compiled library to LightGBM on holdout rows,
   moves ``champion`` — unless someone moved it meanwhile — and returns the announcement to send.

What is promoted is exactly the model that was evaluated (no refit on the holdout afterwards): the
numbers in its manifest describe it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from scoring.announcements import ModelAnnouncement, announcement_for
from scoring.compiled import ModelIntegrityError
from scoring.decision import DECLINE, REVIEW, DecisionPolicy
from scoring.drift import reference_from
from scoring.features import FEATURE_NAMES
from scoring.model_swap import ModelRefusedError, check_canary
from scoring.registry import MODEL_TEXT, ModelManifest, ModelRegistry, UnknownModelError
from scoring.settings import TrainingSettings
from training.evaluate import card_precision_at_k, realised_cost
from training.fit import BASE_PARAMS, fit
from training.trainer_state import RowSet

log = logging.getLogger("fraudstream.trainer")

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
CANARY_ROWS = 512
#: Parameters of the champion a continued challenger keeps (the tree shape it was tuned with).
TREE_SHAPE = ("num_leaves", "min_data_in_leaf", "max_depth", "learning_rate", "lambda_l2")

# Why a round ends without a promotion (the `reason` label of fraudstream_trainer_refusals_total).
TOO_FEW_LABELS = "too_few_labels"
NO_CHALLENGER = "no_challenger"
NOT_BETTER = "not_better"
COST = "cost"
CARD_PRECISION = "card_precision"
DECLINE_RATE = "decline_rate"
REVIEW_RATE = "review_rate"
INTEGRITY = "integrity"
CANARY = "canary"
CHAMPION_MOVED = "champion_moved"
NO_CHAMPION = "no_champion"
SCHEMA = "schema"
ERROR = "error"
REFUSAL_REASONS = (
    TOO_FEW_LABELS, NO_CHALLENGER, NOT_BETTER, COST, CARD_PRECISION, DECLINE_RATE, REVIEW_RATE,
    INTEGRITY, CANARY, CHAMPION_MOVED, NO_CHAMPION, SCHEMA, ERROR,
)  # fmt: skip
#: Refusals that are verdicts of a complete round (the trainer works; the challengers lost).
VERDICTS = (NOT_BETTER, COST, CARD_PRECISION, DECLINE_RATE, REVIEW_RATE, CHAMPION_MOVED)
CANDIDATES = ("champion", "continued", "fresh")
STAGES = ("fit_continued", "fit_fresh", "evaluate", "register", "publish")


# ------------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class RoundPlan:
    """The periods of one round, in event time (epoch ms)."""

    clock_ms: int  # the trainer's event time when the round started
    horizon_ms: int  # clock − maturity: transactions before it are matured
    window_start_ms: int  # horizon − window_days: the fresh challenger's data starts here
    holdout_start_ms: int  # the holdout is [holdout_start, horizon); training data ends here
    continue_from_ms: int  # the continued challenger's new data starts here

    def describe(self) -> str:
        def day(ms: int) -> str:
            return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="minutes")

        return (
            f"train [{day(self.window_start_ms)}, {day(self.holdout_start_ms)}) "
            f"(continued from {day(self.continue_from_ms)}), "
            f"holdout [{day(self.holdout_start_ms)}, {day(self.horizon_ms)})"
        )


def plan_round(
    clock_ms: int, training: TrainingSettings, champion_until_ms: int | None
) -> RoundPlan | None:
    """The round's periods, or None when no matured period is left that the champion did not
    train on (nothing to judge it on)."""
    horizon = clock_ms - round(training.label_maturity_days * DAY_MS)
    window_start = horizon - round(training.window_days * DAY_MS)
    holdout_start = horizon - round(training.eval_days * DAY_MS)
    if champion_until_ms is not None:
        holdout_start = max(holdout_start, champion_until_ms)
    if holdout_start >= horizon:
        return None
    continue_from = window_start if champion_until_ms is None else champion_until_ms
    return RoundPlan(
        clock_ms=clock_ms,
        horizon_ms=horizon,
        window_start_ms=window_start,
        holdout_start_ms=holdout_start,
        continue_from_ms=max(continue_from, window_start),
    )


def retrain_due(new_matured: int, horizon_moved_ms: int, training: TrainingSettings) -> bool:
    """After ``retrain_every_labels`` newly matured rows, or ``retrain_interval_hours`` of event
    time (with at least one new row)."""
    if new_matured >= training.retrain_every_labels:
        return True
    interval = training.retrain_interval_hours
    return interval > 0 and new_matured > 0 and horizon_moved_ms >= interval * HOUR_MS


# ------------------------------------------------------------------------------------ challengers


@dataclass
class Challenger:
    name: str  # continued | fresh
    booster: lgb.Booster
    params: dict[str, Any]
    window: tuple[datetime | None, datetime | None]
    train_rows: int
    train_frauds: int
    seconds: float
    rows: RowSet  # what it learned from (the drift reference describes them)


def fit_fresh(
    train: RowSet, *, seed: int, max_trees: int, num_threads: int
) -> tuple[lgb.Booster, dict[str, Any]] | None:
    """A new model on the sliding window (training.fit: time-ordered validation, small grid)."""
    if train.frauds == 0:
        return None
    result = fit(
        train.X, train.y, train.ts_ms, feature_names=list(FEATURE_NAMES), seed=seed,
        max_trees=max_trees, num_threads=num_threads,
    )  # fmt: skip
    params = {**result.params, "num_trees": result.num_trees, "grid": result.grid}
    return result.booster, params


def fit_continued(
    champion: lgb.Booster,
    champion_params: Mapping[str, Any],
    new: RowSet,
    *,
    seed: int,
    max_trees: int,
    num_threads: int,
    validation_share: float = 0.25,
    early_stopping: int = 30,
) -> tuple[lgb.Booster, dict[str, Any]] | None:
    """The champion plus trees fitted on ``new`` (LightGBM ``init_model``: the new trees learn
    the champion's residual on the new data). The number of trees is chosen like training.fit
    does: early stopping on the last ``validation_share`` of the new rows by time, then a refit
    on all of them with the count scaled to the larger data. None when the new rows hold too few
    frauds to choose, or no added tree helped."""
    n = len(new)
    split = int(n * (1.0 - validation_share))
    if split == 0 or new.y[:split].sum() == 0 or new.y[split:].sum() == 0:
        return None
    base = champion.current_iteration()
    params: dict[str, Any] = {
        **BASE_PARAMS,
        **{k: champion_params[k] for k in TREE_SHAPE if k in champion_params},
        "seed": seed,
        "num_threads": num_threads,
    }
    names = list(FEATURE_NAMES)
    train_set = lgb.Dataset(new.X[:split], new.y[:split], feature_name=names, free_raw_data=False)
    valid_set = lgb.Dataset(new.X[split:], new.y[split:], reference=train_set, free_raw_data=False)
    probe = lgb.train(
        {**params, "metric": "average_precision"},
        train_set,
        num_boost_round=max_trees,
        valid_sets=[valid_set],
        init_model=champion,
        callbacks=[lgb.early_stopping(early_stopping, verbose=False)],
    )
    added = probe.best_iteration - base
    if added <= 0:
        return None
    added_full = min(max_trees, max(1, round(added / (1.0 - validation_share))))
    full = lgb.Dataset(new.X, new.y, feature_name=names, free_raw_data=False)
    booster = lgb.train(params, full, num_boost_round=added_full, init_model=champion)
    return booster, {
        **params,
        "num_trees": booster.current_iteration(),
        "added_trees": added_full,
        "validation_average_precision": float(probe.best_score["valid_0"]["average_precision"]),
    }


# ------------------------------------------------------------------------------------ evaluation


@dataclass(frozen=True)
class Scorecard:
    """A model on the holdout."""

    transactions: int
    frauds: int
    average_precision: float
    auc_roc: float
    card_precision_at_k: float
    cost_per_transaction: float  # realised cost of the policy's decisions, per transaction
    decline_rate: float
    review_rate: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    def summary(self) -> str:
        return (
            f"AP {self.average_precision:.4f}, CP@k {self.card_precision_at_k:.3f}, "
            f"cost/tx {self.cost_per_transaction:.4f}, decline {self.decline_rate:.2%}, "
            f"review {self.review_rate:.2%}"
        )


def evaluate(scores: np.ndarray, holdout: RowSet, policy: DecisionPolicy, k: int) -> Scorecard:
    """Scores on the holdout → ranking quality and what the policy's decisions would cost."""
    y = holdout.y
    p = np.asarray(scores, dtype=np.float64)
    n = max(len(y), 1)
    both = 0 < y.sum() < len(y)
    action = policy.decide_many(holdout.policy_table(), p).action
    cost = np.zeros(len(y))
    banks = holdout.bank.tolist()
    for bank in set(banks):
        rows = np.fromiter((b == bank for b in banks), bool, len(banks))
        bank_policy = policy.for_bank(bank)
        cost[rows] = realised_cost(action[rows], holdout.amount[rows], y[rows], bank_policy)
    precision = card_precision_at_k(holdout.card, holdout.ts_ms // DAY_MS, y, p, k)
    return Scorecard(
        transactions=len(y),
        frauds=int(y.sum()),
        average_precision=float(average_precision_score(y, p)) if both else math.nan,
        auc_roc=float(roc_auc_score(y, p)) if both else math.nan,
        card_precision_at_k=precision.mean,
        cost_per_transaction=float(cost.sum() / n),
        decline_rate=float((action == DECLINE).mean()) if len(y) else 0.0,
        review_rate=float((action == REVIEW).mean()) if len(y) else 0.0,
    )


# ------------------------------------------------------------------------------------ the rule


@dataclass(frozen=True)
class PromotionRules:
    margin: float  # average precision a challenger must gain
    max_cost_increase: float  # relative
    max_card_precision_drop: float  # absolute
    max_decline_rate_increase: float  # absolute share
    max_review_rate_increase: float  # absolute share

    @classmethod
    def from_settings(cls, training: TrainingSettings) -> PromotionRules:
        return cls(
            margin=training.promote_margin,
            max_cost_increase=training.max_cost_increase,
            max_card_precision_drop=training.max_card_precision_drop,
            max_decline_rate_increase=training.max_decline_rate_increase,
            max_review_rate_increase=training.max_review_rate_increase,
        )


_EPS = 1e-12  # float noise never decides


def judge(
    candidate: Scorecard, champion: Scorecard, rules: PromotionRules
) -> tuple[str | None, str]:
    """(None, why) when ``candidate`` may replace ``champion``, else (reason, why not)."""
    gain = candidate.average_precision - champion.average_precision
    if not gain >= rules.margin - _EPS:  # NaN never passes
        return NOT_BETTER, (
            f"average precision {candidate.average_precision:.4f} vs champion "
            f"{champion.average_precision:.4f}: {gain:+.4f}, margin {rules.margin:g}"
        )
    limit = champion.cost_per_transaction * (1.0 + rules.max_cost_increase)
    if candidate.cost_per_transaction > limit + _EPS:
        return COST, (
            f"cost per transaction {candidate.cost_per_transaction:.4f} vs champion "
            f"{champion.cost_per_transaction:.4f} (allowed +{rules.max_cost_increase:.1%})"
        )
    drop = champion.card_precision_at_k - candidate.card_precision_at_k
    if drop > rules.max_card_precision_drop + _EPS:
        return CARD_PRECISION, (
            f"card precision@k {candidate.card_precision_at_k:.3f} vs champion "
            f"{champion.card_precision_at_k:.3f} (allowed −{rules.max_card_precision_drop:g})"
        )
    jump = candidate.decline_rate - champion.decline_rate
    if jump > rules.max_decline_rate_increase + _EPS:
        return DECLINE_RATE, (
            f"decline rate {candidate.decline_rate:.3%} vs champion {champion.decline_rate:.3%} "
            f"(allowed +{rules.max_decline_rate_increase:.3%})"
        )
    jump = candidate.review_rate - champion.review_rate
    if jump > rules.max_review_rate_increase + _EPS:
        return REVIEW_RATE, (
            f"review rate {candidate.review_rate:.3%} vs champion {champion.review_rate:.3%} "
            f"(allowed +{rules.max_review_rate_increase:.3%})"
        )
    return None, (
        f"average precision {candidate.average_precision:.4f} vs champion "
        f"{champion.average_precision:.4f} ({gain:+.4f}); guardrails hold"
    )


@dataclass(frozen=True)
class Verdict:
    winner: str | None  # the challenger to promote
    reason: str | None  # why none, when winner is None
    detail: str
    judged: dict[str, tuple[str | None, str]] = field(default_factory=dict)


def decide(
    champion: Scorecard, candidates: Mapping[str, Scorecard], rules: PromotionRules
) -> Verdict:
    """The challenger with the highest average precision among those that pass every rule; none
    passing: the reason of the best one (the one that came closest)."""
    if not candidates:
        return Verdict(None, NO_CHALLENGER, "no challenger could be trained")
    judged = {name: judge(card, champion, rules) for name, card in candidates.items()}

    def rank(name: str) -> tuple[float, str]:
        ap = candidates[name].average_precision
        return (-ap if not math.isnan(ap) else math.inf, name)

    passing = sorted((n for n, (reason, _) in judged.items() if reason is None), key=rank)
    if passing:
        return Verdict(passing[0], None, f"{passing[0]}: {judged[passing[0]][1]}", judged)
    best = min(candidates, key=rank)
    reason, why = judged[best]
    return Verdict(None, reason, f"{best}: {why}", judged)


# ------------------------------------------------------------------------------------ a round


@dataclass
class RoundResult:
    outcome: str  # promoted | refused | abandoned
    reason: str | None  # refusal reason (None when promoted)
    detail: str
    plan: RoundPlan
    champion: str | None = None
    promoted: str | None = None
    challenger: str | None = None  # continued | fresh, when promoted
    scorecards: dict[str, Scorecard] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    train_rows: dict[str, int] = field(default_factory=dict)
    compile_seconds: float | None = None
    announcement: ModelAnnouncement | None = None  # to publish on model-updates
    integrity_failure: bool = False


@dataclass
class RoundInputs:
    data: RowSet  # usable (joined, matured) rows of [window start, horizon), targets as of clock
    plan: RoundPlan


def _ms(value: datetime | None) -> int | None:
    return None if value is None else round(value.timestamp() * 1000)


def _dt(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def load_champion(
    registry: ModelRegistry, alias: str = "champion"
) -> tuple[ModelManifest, lgb.Booster]:
    """The champion's manifest and booster, every artifact's SHA-256 checked
    (:class:`~scoring.compiled.ModelIntegrityError` when one does not match)."""
    manifest = registry.verify(alias)
    text = registry.storage.read_bytes(f"versions/{manifest.version}/{MODEL_TEXT}")
    if hashlib.sha256(text).hexdigest() != manifest.artifacts[MODEL_TEXT].sha256:
        raise ModelIntegrityError(f"{manifest.version}/{MODEL_TEXT} changed while being read")
    return manifest, lgb.Booster(model_str=text.decode())


def run_round(
    inputs: RoundInputs,
    registry: ModelRegistry,
    training: TrainingSettings,
    policy: DecisionPolicy,
    *,
    alias: str = "champion",
    should_stop: Callable[[], bool] = lambda: False,
    on_stage: Callable[[str], None] = lambda _stage: None,
) -> RoundResult:
    """Train, evaluate, decide and (maybe) publish; see the module docstring. Never raises for
    the outcomes it knows (they are refusals); unexpected errors propagate. ``should_stop`` is
    asked between stages (before publishing starts, a stop abandons the round); ``on_stage`` is
    told each stage as it starts."""
    plan = inputs.plan
    result = RoundResult(outcome="refused", reason=None, detail="", plan=plan)

    def refuse(reason: str, detail: str) -> RoundResult:
        result.reason, result.detail = reason, detail
        return result

    try:
        manifest, champion = load_champion(registry, alias)
    except UnknownModelError:
        return refuse(NO_CHAMPION, f"no {alias} in {registry.storage.describe()}")
    except ModelIntegrityError as exc:
        result.integrity_failure = True
        return refuse(INTEGRITY, f"{alias}: {exc}")
    result.champion = manifest.version
    if list(manifest.feature_names) != list(FEATURE_NAMES):
        return refuse(SCHEMA, f"{manifest.version} was trained on another feature schema")

    holdout = inputs.data.between(plan.holdout_start_ms, plan.horizon_ms)
    result.train_rows["holdout"] = len(holdout)
    if holdout.frauds < training.min_eval_frauds:
        return refuse(
            TOO_FEW_LABELS,
            f"holdout has {holdout.frauds} frauds in {len(holdout):,} transactions "
            f"(min_eval_frauds {training.min_eval_frauds})",
        )

    challengers: list[Challenger] = []
    seed, threads = training.seed, training.num_threads
    new = inputs.data.between(plan.continue_from_ms, plan.holdout_start_ms)
    on_stage("fit_continued")
    started = time.perf_counter()
    continued = fit_continued(champion, manifest.params, new, seed=seed,
                              max_trees=training.continue_trees, num_threads=threads)  # fmt: skip
    result.seconds["fit_continued"] = time.perf_counter() - started
    if continued is not None:
        booster, params = continued
        challengers.append(
            Challenger(
                name="continued",
                booster=booster,
                params={**params, "kind": "continued", "init_model": manifest.version},
                window=(manifest.window.from_, _dt(plan.holdout_start_ms)),
                train_rows=len(new),
                train_frauds=new.frauds,
                seconds=result.seconds["fit_continued"],
                rows=new,
            )
        )
    result.train_rows["continued"] = len(new)
    if should_stop():
        return _abandon(result)

    window = inputs.data.between(plan.window_start_ms, plan.holdout_start_ms)
    on_stage("fit_fresh")
    started = time.perf_counter()
    fresh = fit_fresh(window, seed=seed, max_trees=training.max_trees, num_threads=threads)
    result.seconds["fit_fresh"] = time.perf_counter() - started
    if fresh is not None:
        booster, params = fresh
        oldest = int(window.ts_ms[0]) if len(window) else plan.window_start_ms
        challengers.append(
            Challenger(
                name="fresh",
                booster=booster,
                params={**params, "kind": "fresh"},
                window=(_dt(oldest), _dt(plan.holdout_start_ms)),
                train_rows=len(window),
                train_frauds=window.frauds,
                seconds=result.seconds["fit_fresh"],
                rows=window,
            )
        )
    result.train_rows["fresh"] = len(window)
    if should_stop():
        return _abandon(result)

    on_stage("evaluate")
    started = time.perf_counter()
    k = training.card_precision_k

    def predict(booster: lgb.Booster) -> np.ndarray:
        return np.asarray(booster.predict(holdout.X, num_threads=threads), dtype=np.float64)

    champion_card = evaluate(predict(champion), holdout, policy, k)
    result.scorecards["champion"] = champion_card
    cards = {c.name: evaluate(predict(c.booster), holdout, policy, k) for c in challengers}
    result.scorecards.update(cards)
    result.seconds["evaluate"] = time.perf_counter() - started
    verdict = decide(champion_card, cards, PromotionRules.from_settings(training))
    for name, (reason, why) in verdict.judged.items():
        log.info("challenger %s: %s — %s", name, reason or "passes", why)
    if verdict.winner is None:
        assert verdict.reason is not None
        return refuse(verdict.reason, verdict.detail)
    if should_stop():
        return _abandon(result)

    winner = next(c for c in challengers if c.name == verdict.winner)
    return _publish(result, winner, manifest, holdout, registry, alias, verdict, on_stage)


def _abandon(result: RoundResult) -> RoundResult:
    result.outcome, result.reason, result.detail = "abandoned", None, "stopping"
    return result


def _publish(
    result: RoundResult,
    winner: Challenger,
    champion: ModelManifest,
    holdout: RowSet,
    registry: ModelRegistry,
    alias: str,
    verdict: Verdict,
    on_stage: Callable[[str], None],
) -> RoundResult:
    cards = result.scorecards
    metrics: dict[str, float | None] = {
        **{f"holdout_{k}": v for k, v in cards[winner.name].as_dict().items()},
        **{f"champion_holdout_{k}": v for k, v in cards["champion"].as_dict().items()},
        # what `fraudstream models list` shows: for trainer models, the holdout's AP
        "validation_average_precision": cards[winner.name].average_precision,
        "train_rows": float(winner.train_rows),
        "train_frauds": float(winner.train_frauds),
        "holdout_from": result.plan.holdout_start_ms / 1000.0,
        "holdout_until": result.plan.horizon_ms / 1000.0,
        "train_seconds": winner.seconds,
    }
    metrics = {k: (None if v is not None and math.isnan(v) else v) for k, v in metrics.items()}
    start, until = winner.window
    if start is not None and until is not None and start >= until:
        start = None
    on_stage("register")
    started = time.perf_counter()
    # What serving compares live traffic with (scoring.drift): the rows this model learned from
    # (for a continued model, the new rows its added trees were fitted on).
    train_scores = np.asarray(winner.booster.predict(winner.rows.X, num_threads=1), np.float64)
    reference = reference_from(winner.rows.X, train_scores, list(FEATURE_NAMES))
    manifest = registry.register(
        winner.booster,
        feature_names=list(FEATURE_NAMES),
        params={**winner.params, "promotion": verdict.detail, "drift_reference": reference},
        metrics=metrics,
        window=(start, until),
        parent=champion.version,
    )
    result.seconds["register"] = time.perf_counter() - started
    result.compile_seconds = manifest.build.build_seconds if manifest.build else None
    on_stage("publish")
    started = time.perf_counter()
    try:
        loaded = registry.load(manifest.version, allow_gtil=False)
        check_canary(loaded, np.ascontiguousarray(holdout.X[-CANARY_ROWS:]))
    except ModelIntegrityError as exc:
        result.integrity_failure = True
        result.reason, result.detail = INTEGRITY, f"{manifest.version}: {exc}"
        return result
    except ModelRefusedError as exc:
        result.reason, result.detail = CANARY, str(exc)
        return result
    current = registry.resolve(alias)
    if current != champion.version:
        result.reason = CHAMPION_MOVED
        result.detail = (
            f"{alias} moved from {champion.version} to {current} during the round; "
            f"{manifest.version} stays registered, unpromoted"
        )
        return result
    registry.promote(manifest.version, alias)
    result.announcement = announcement_for(registry, alias, previous=champion.version)
    result.seconds["publish"] = time.perf_counter() - started
    result.outcome, result.reason = "promoted", None
    result.promoted, result.challenger = manifest.version, winner.name
    result.detail = verdict.detail
    return result
