"""A client with ClientErrors' settings counts its connection errors and prints none of them."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from confluent_kafka import Producer

from stream.client_errors import ClientErrors


def test_refused_connections_are_counted_not_printed(
    free_tcp_ports: Callable[[int], list[int]],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    (port,) = free_tcp_ports(1)  # nothing listens there
    errors = ClientErrors(logging.getLogger("test.client_errors"))
    producer = Producer(
        {
            "bootstrap.servers": f"127.0.0.1:{port}",
            "message.timeout.ms": 1500,
            "reconnect.backoff.ms": 50,
            **errors.config(),
        }
    )
    failed: list[object] = []
    producer.produce("t", value=b"x", on_delivery=lambda err, _m: failed.append(err))
    with caplog.at_level(logging.INFO, logger="test.client_errors"):
        producer.flush(10)
    del producer

    assert len(failed) == 1 and failed[0] is not None  # given up after message.timeout.ms
    assert errors.by_name["_TRANSPORT"] >= 1, errors.by_name
    assert f"127.0.0.1:{port}" in errors.suffix() and "last client error" in errors.suffix()
    assert any("kafka client error" in r.getMessage() for r in caplog.records)
    out, err = capfd.readouterr()
    assert "Connection refused" not in out + err  # librdkafka's own log lines are held back


def test_no_errors_no_suffix() -> None:
    assert ClientErrors(logging.getLogger("test.client_errors")).suffix() == ""
