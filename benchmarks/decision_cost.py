"""What the decisions cost on a labelled log: fraud let through, reviews, friction, compute.

The offline path of ``fraudstream train`` + ``score-log`` + ``evaluate`` on one log:

1. the log's time span is split at ``--train-share``; a model is trained on the transactions
   before the split with only the labels **reported** before it (what the bank knew then);
2. the whole log is replayed through the feature engine (labels applied at their
   ``reported_at``) and the transactions after the split are decided by the compiled model and
   the policy of the settings (``FRAUD_SCORING__*``), exactly as ``score-log`` does; the process's
   CPU time for that is measured;
3. the decisions are judged against every label in the file (the final truth): AUC, average
   precision, card precision@k, and the **realised cost** of each decision — a fraud approved
   costs its amount, a review costs ``review_cost`` plus the share of fraud a review still misses,
   a declined genuine customer costs ``friction_share`` of the amount (``training.evaluate``) —
   next to approving everything. Costs are per million transactions, in the log's currency.

Compute per million transactions = CPU-seconds per transaction × 10⁶ × the configured price of a
CPU-second (``scoring.cpu_second_usd``, default $0.0000134 ≈ $0.048 per vCPU-hour, an on-demand
cloud vCPU). This program measures the offline path (one process, whole log in one batch); the
stream worker's own CPU per transaction comes from ``stream_throughput.py``.

Writes results/decision_cost.{json,md,png}.

    .venv/bin/python benchmarks/decision_cost.py                       # simulated, ~1 min
    .venv/bin/python benchmarks/decision_cost.py --transactions T --labels L --out DIR
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import typer

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

from scoring.decision import policy_from  # noqa: E402
from scoring.logs import TIMESTAMP, read_labels, read_transactions  # noqa: E402
from scoring.registry import ModelRegistry  # noqa: E402
from scoring.settings import Settings  # noqa: E402
from training.evaluate import evaluate, realised_cost  # noqa: E402
from training.offline import score_log  # noqa: E402
from training.simulator import SimulationConfig, simulate  # noqa: E402
from training.train import train_and_register  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
NAME = "decision_cost"
DAY_MS = 86_400_000
PER_MILLION = 1_000_000


def split_time(transactions: pa.Table, share: float) -> datetime:
    """The moment ``share`` of the way through the log's time span."""
    ts = pc.min_max(transactions["timestamp"].cast(TIMESTAMP))
    first, last = ts["min"].as_py(), ts["max"].as_py()
    moment: datetime = first + (last - first) * share
    return moment


def per_day(scores: pa.Table, y: np.ndarray, realised: np.ndarray) -> list[dict[str, Any]]:
    """Average precision and realised cost per transaction, day by day (UTC days)."""
    from sklearn.metrics import average_precision_score

    day = scores["timestamp"].cast(TIMESTAMP).cast(pa.int64()).to_numpy() // DAY_MS
    p = np.asarray(scores["score"].to_numpy(), dtype=np.float64)
    out = []
    for d in np.unique(day):
        rows = day == d
        frauds = int(y[rows].sum())
        out.append(
            {
                "date": str(np.datetime64(int(d), "D")),
                "transactions": int(rows.sum()),
                "frauds": frauds,
                "average_precision": (
                    float(average_precision_score(y[rows], p[rows]))
                    if 0 < frauds < rows.sum()
                    else None
                ),
                "cost_per_transaction": float(realised[rows].mean()),
            }
        )
    return out


def measure(
    transactions: pa.Table,
    labels: pa.Table,
    *,
    train_share: float,
    registry_dir: Path,
    k: int,
    settings: Settings,
    seed: int = 7,
) -> dict[str, Any]:
    split = split_time(transactions, train_share)
    known = labels.filter(pc.less(labels["reported_at"], pa.scalar(split, TIMESTAMP)))
    if not pc.any(known["is_fraud"]).as_py():
        raise SystemExit(
            f"no fraud label was reported before the split ({split:%Y-%m-%d %H:%M}); nothing to "
            "train on: give more history or a larger --train-share"
        )
    registry = ModelRegistry(registry_dir)
    started = time.perf_counter()
    manifest = train_and_register(transactions, known, registry=registry, until=split, seed=seed)
    train_seconds = time.perf_counter() - started
    loaded = registry.load(manifest.version)
    policy = policy_from(settings)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    scores = score_log(
        transactions, labels, loaded, policy=policy, start=split,
        cpu_second_usd=settings.scoring.cpu_second_usd,
        reasons_method=settings.scoring.reasons_method,
    )  # fmt: skip
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    n = scores.num_rows
    if n == 0:
        raise SystemExit(f"no transaction after the split ({split:%Y-%m-%d %H:%M})")

    result = evaluate(scores, labels, k=k, policy=policy.default)
    fraud_ids = labels.filter(pc.equal(labels["is_fraud"], True))["transaction_id"]
    y = np.asarray(
        pc.fill_null(pc.is_in(scores["transaction_id"], value_set=fraud_ids), False).to_numpy(
            zero_copy_only=False
        ),
        dtype=bool,
    )
    amount = np.asarray(scores["amount"].to_numpy(), dtype=np.float64)
    names = np.asarray(scores["action"].to_numpy(zero_copy_only=False), dtype=object)
    from scoring.decision import APPROVE, DECLINE, REVIEW

    action = np.select([names == "review", names == "decline"], [REVIEW, DECLINE], APPROVE)
    realised = realised_cost(action, amount, y, policy.default)
    approved_fraud = (action == APPROVE) & y
    reviewed = action == REVIEW
    declined_genuine = (action == DECLINE) & ~y
    scale = PER_MILLION / n
    cpu_per_tx = cpu / n
    price = settings.scoring.cpu_second_usd
    missed = (
        amount[approved_fraud].sum() + policy.default.review_miss_rate * amount[reviewed & y].sum()
    )
    costs = {
        "missed_fraud": float(missed) * scale,
        "reviews": float(policy.default.review_cost * reviewed.sum()) * scale,
        "friction": float(policy.default.friction_share * amount[declined_genuine].sum()) * scale,
        "total": float(realised.sum()) * scale,
        "approve_all": float(amount[y].sum()) * scale,
        "expected_fraud_loss_ex_ante": float(pc.sum(scores["expected_fraud_loss"]).as_py() or 0)
        * scale,
        "compute_offline": cpu_per_tx * PER_MILLION * price,
    }  # fmt: skip
    return {
        "split": split.isoformat(timespec="seconds"),
        "model_version": manifest.version,
        "model_trees": manifest.params.get("num_trees"),
        "train_rows": int(manifest.metrics.get("train_rows", 0)),
        "train_frauds": int(manifest.metrics.get("train_frauds", 0)),
        "train_seconds": train_seconds,
        "scored": n,
        "frauds": int(y.sum()),
        "fraud_amount": float(amount[y].sum()),
        "score_log_seconds": wall,
        "score_log_cpu_seconds": cpu,
        "cpu_us_per_transaction_offline": cpu_per_tx * 1e6,
        "cpu_second_usd": price,
        "cpu_hour_usd": price * 3600,
        "policy": {
            "review_cost": policy.default.review_cost,
            "review_miss_rate": policy.default.review_miss_rate,
            "friction_share": policy.default.friction_share,
        },
        "reasons_method": settings.scoring.reasons_method,
        "evaluation": result.as_dict(),
        "action_counts": {
            "approve": int((action == APPROVE).sum()),
            "review": int(reviewed.sum()),
            "decline": int((action == DECLINE).sum()),
        },
        "cost_per_million": costs,
        "per_day": per_day(scores, y.astype(np.int8), realised),
    }


def write_reports(results: dict[str, Any], out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{NAME}.json").write_text(json.dumps(results, indent=2) + "\n")
    e, c = results["evaluation"], results["cost_per_million"]
    lines = [
        "# Decisions and their cost on a labelled log",
        "",
        f"{results['machine']}. Source: {results['source']}. Command: `{results['command']}`.",
        "",
        f"Model {results['model_version']} ({results['model_trees']} trees) trained on "
        f"{results['train_rows']:,} transactions ({results['train_frauds']:,} frauds) before "
        f"{results['split']}; {results['scored']:,} transactions after it decided "
        f"({results['frauds']:,} frauds), reasons: {results['reasons_method']}.",
        "",
        "| AUC ROC | average precision | card precision@k | approve / review / decline |",
        "|---:|---:|---:|---|",
        f"| {e['auc_roc']:.3f} | {e['average_precision']:.3f} | "
        f"{e['card_precision_at_k']:.3f} (k={e['k']}) | "
        + " / ".join(f"{results['action_counts'][a]:,}" for a in ("approve", "review", "decline"))
        + " |",
        "",
        "Per million transactions (the log's currency; compute in USD at "
        f"${results['cpu_hour_usd']:.4f} per CPU-hour):",
        "",
        "| missed fraud | reviews | friction | **total** | approve everything | "
        "expected fraud loss (ex ante) | compute, offline path |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {c['missed_fraud']:,.0f} | {c['reviews']:,.0f} | {c['friction']:,.0f} | "
        f"**{c['total']:,.0f}** | {c['approve_all']:,.0f} | "
        f"{c['expected_fraud_loss_ex_ante']:,.0f} | {c['compute_offline']:.4f} |",
        "",
        f"Offline scoring: {results['cpu_us_per_transaction_offline']:.1f} CPU-µs per transaction "
        f"(features for the whole log, model, policy, reasons; {results['score_log_seconds']:.1f} "
        "s).",
    ]
    text = "\n".join(lines) + "\n"
    (out / f"{NAME}.md").write_text(text)
    _plot(results, out / f"{NAME}.png")
    return text


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = results["per_day"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    x = [np.datetime64(d["date"]) for d in days]
    axes[0].plot(x, [np.nan if d["average_precision"] is None else d["average_precision"]
                     for d in days], marker="o")  # fmt: skip
    axes[0].set(title="Average precision per day", ylim=(0, 1))
    axes[0].tick_params(axis="x", labelrotation=45)
    c = results["cost_per_million"]
    parts = ["missed_fraud", "reviews", "friction"]
    axes[1].bar([*parts, "approve_all"], [c[p] for p in parts] + [c["approve_all"]],
                color=["#c44e52", "#dd8452", "#8172b3", "#999999"])  # fmt: skip
    axes[1].set(title="Realised cost per million transactions")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(
    log_transactions: Annotated[
        Path | None, typer.Option("--transactions", help="Transactions log (default: simulate).")
    ] = None,
    log_labels: Annotated[
        Path | None, typer.Option("--labels", help="Labels for --transactions (required with it).")
    ] = None,
    cards: Annotated[int, typer.Option(help="Simulated cards.")] = 2000,
    days: Annotated[int, typer.Option(help="Simulated days.")] = 30,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 6,
    train_share: Annotated[
        float, typer.Option(min=0.05, max=0.95, help="Share of the time span trained on.")
    ] = 0.5,
    k: Annotated[int, typer.Option(help="Cards per day for card precision@k.")] = 100,
    out: Annotated[Path, typer.Option(help="Results directory.")] = RESULTS,
) -> None:
    """Train on the first part of a log, decide the rest, and say what the decisions cost."""
    if log_transactions is not None:
        if log_labels is None:
            raise typer.BadParameter("needs --labels: costs are judged against them")
        transactions, labels = read_transactions(log_transactions), read_labels(log_labels)
        source = f"log {log_transactions.name} + {log_labels.name}"
    else:
        transactions, labels = simulate(SimulationConfig(cards=cards, days=days, seed=seed))
        source = f"simulated: {cards:,} cards × {days} days, seed {seed}"
    import tempfile

    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fraudstream-cost-") as tmp:
        measured = measure(
            transactions, labels, train_share=train_share, registry_dir=Path(tmp) / "registry",
            k=k, settings=Settings(),
        )  # fmt: skip
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "run_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["python benchmarks/decision_cost.py", *sys.argv[1:]]),
        "source": source,
        "transactions": transactions.num_rows,
        "wall_seconds": time.perf_counter() - began,
        **measured,
    }
    print(write_reports(results, out))


if __name__ == "__main__":
    typer.run(main)
