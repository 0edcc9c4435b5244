"""The CI chaos profile (issue 9): faults while a log streams through broker, workers and API.

About 21k simulated transactions (and their labels) are replayed at a moderate rate through a
broker of the test's own, a worker and the API, while the schedule runs: the worker SIGKILLed,
the broker restarted, the worker SIGTERMed, two workers added and removed (1 -> 3 -> 1), the
worker SIGKILLed again and the API restarted, each at a seeded random moment. Then every
transaction must have exactly one committed decision, equal (all but timings and CPU cost) to the
offline scoring of the same log, and the feature vector the model saw must be the one rebuilt
offline from the input, bit for bit. The API calls made meanwhile must all get a 2xx, never a 5xx;
their latencies are printed, not asserted (docs/reliability.md: this loaded machine starves the
API's event loop; the deadline is asserted in test_api_under_faults.py).

The seed is random per run and printed; ``CHAOS_SEED=<n>`` repeats a run's fault moments.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from scoring.registry import ModelRegistry
from stream.transactional import EXIT_TXN_HUNG
from tests.chaos.harness import CI_SCHEDULE, ChaosRun
from training.simulator import SimulationConfig, simulate
from training.train import train_and_register

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

RATE = float(os.environ.get("CHAOS_RATE", "90"))  # log transactions per second: ~4 minutes


def test_faults_change_no_decision(
    tmp_path: Path, free_tcp_ports: Callable[[int], list[int]]
) -> None:
    seed = int(os.environ.get("CHAOS_SEED", random.randrange(1_000_000)))
    print(f"\nchaos seed {seed} (CHAOS_SEED={seed} repeats this run's fault moments)")
    transactions, labels = simulate(SimulationConfig(days=10, cards=1250, seed=9))
    registry = ModelRegistry(tmp_path / "registry")
    start = transactions.column("timestamp")[0].as_py()
    model = train_and_register(
        transactions, labels, registry=registry, until=start + timedelta(days=7), seed=1
    )
    registry.promote(model.version)

    report = ChaosRun(
        transactions, labels, tmp_path / "registry", tmp_path, free_tcp_ports,
        schedule=list(CI_SCHEDULE), seed=seed, rate=RATE,
    ).run()  # fmt: skip

    where = f"(seed {seed}; {report.examples[:3]})"
    kinds = report.faults_by_kind()
    summary = {k: v for k, v in report.api.items() if k != "series"}
    print(f"faults {kinds}; api {summary}; {report.seconds:.0f} s")
    assert kinds.get("sigkill", 0) + kinds.get("sigterm", 0) >= 3 and kinds.get("sigterm")
    assert kinds.get("broker_restart") == 1 and kinds.get("scale_out_in") == 1
    assert kinds.get("api_restart") == 1
    assert report.transactions >= 20_000
    assert report.lost == 0, f"{report.lost} transactions without a decision {where}"
    assert report.duplicated == 0, f"{report.duplicated} duplicate decisions {where}"
    assert report.mismatched == 0, f"{report.mismatched} decisions differ {where}"
    assert report.checked == report.transactions
    assert report.feature_rows_missing == 0 and report.feature_rows_duplicated == 0, where
    assert report.feature_mismatched == 0, f"{report.feature_mismatched} vectors differ {where}"
    # 0: a clean exit after SIGTERM; EXIT_TXN_HUNG: Kafka transaction calls piled up stuck in
    # librdkafka after a broker restart and the worker exited to be restarted
    # (stream/transactional.py, docs/reliability.md)
    assert all(code in (0, EXIT_TXN_HUNG) for code in report.exits.values()), report.exits
    assert all(e["exit"] == EXIT_TXN_HUNG for e in report.unplanned_exits), report.unplanned_exits
    print(f"exits after SIGTERM {report.exits}; unplanned {report.unplanned_exits}")
    scale = next(f for f in report.faults if f.kind == "scale_out_in")
    assert " 0 " not in f" {scale.detail} ".replace(" and ", " "), scale.detail  # both decided
    api = report.api
    assert api["calls"] > 0 and api["answered_2xx"] == api["calls"], api
    assert api["status_5xx"] == 0 and api["unanswered"] == 0, api
    assert api["retried_after_connection_errors"] > 0, api  # the API restart was felt
    assert api["lost_on_topic"] == 0 and api["duplicated_on_topic"] == 0, api
    # given up by the API during the broker restart (its 30 s delivery timeout): fallback answers
    assert api["not_delivered_answered_degraded"] == api["not_delivered_during_broker_outage"]
    assert api["answer_differs_from_topic"] == 0, api
    assert api["resent_after_restart"] > 0, api
    assert api["resent_same_answer"] == api["resent_after_restart"], api
