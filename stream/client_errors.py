"""Kafka client errors collected and logged through Python, not printed by librdkafka.

Left alone, librdkafka prints a line on stderr for every failed connection attempt: dozens a
second from each client while a broker restarts. Those lines bury whatever else a process says
(a CLI's output, a test's failure). The same errors reach ``error_cb``; this keeps a count and the
last one (for an error message) and logs each at a level of the caller's choice.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from confluent_kafka import KafkaError


class ClientErrors:
    """``config()`` goes into a client's settings; ``by_name``, ``last`` and ``suffix()`` say
    what the client met."""

    def __init__(self, log: logging.Logger, level: int = logging.INFO) -> None:
        self.log = log
        self.level = level
        self.by_name: Counter[str] = Counter()
        self.last: KafkaError | None = None

    def config(self) -> dict[str, object]:
        # syslog levels: 2 keeps only librdkafka's critical lines; errors arrive through error_cb.
        return {"error_cb": self._on_error, "log_level": 2}

    def suffix(self) -> str:
        """`` (last client error: ...)`` to end an error message with, or nothing."""
        return f" (last client error: {self.last.str()})" if self.last is not None else ""

    def _on_error(self, error: KafkaError) -> None:
        self.by_name[error.name()] += 1
        self.last = error
        self.log.log(self.level, "kafka client error: %s", error.str())
