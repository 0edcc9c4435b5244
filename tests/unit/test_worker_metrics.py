"""The worker's kept metric children stay tied to what is exported."""

from prometheus_client import generate_latest

from stream.metrics import WorkerMetrics


def _lag_lines(metrics: WorkerMetrics) -> list[str]:
    text = generate_latest(metrics.registry).decode()
    return [line for line in text.splitlines() if line.startswith("fraudstream_consumer_lag{")]


def test_a_partition_that_comes_back_exports_its_lag_again() -> None:
    metrics = WorkerMetrics()
    metrics.lag_of(2).set(7)
    assert _lag_lines(metrics) == ['fraudstream_consumer_lag{partition="2"} 7.0']
    metrics.drop_lag(2)  # revoked: the series goes
    assert _lag_lines(metrics) == []
    metrics.drop_lag(2)  # twice, or never exported: no error
    metrics.lag_of(2).set(3)  # assigned again
    assert _lag_lines(metrics) == ['fraudstream_consumer_lag{partition="2"} 3.0']
