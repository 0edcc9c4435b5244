"""The worker's transactional Kafka producer, and what it does when a transaction call stalls.

librdkafka's transaction calls may be retried after a retriable error, but after a broker pause
that moved the transaction coordinator they were seen to stall instead (tests/integration/
test_backpressure.py, in CI): ``send_offsets_to_transaction`` kept its AddOffsetsToTxn request in
the queue of a coordinator handle that no longer led anywhere ("0 in-flight, 1 out-queue"),
ignored its own timeout for 60 s, and every retry stalled the same way (librdkafka issues #5456
and #5511). So a transaction call is never retried on the producer it stalled on. The producer is
replaced by a new one under the same ``transactional.id``: its ``init_transactions`` looks the
coordinator up afresh and bumps the producer epoch, which fences the old producer and makes the
coordinator abort its open transaction. The caller then redoes that transaction from a checkpoint,
as after any abort, so exactly-once holds whether the stalled call had taken effect or not.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaException, Producer, TopicPartition

from scoring.messages import OutRecord

log = logging.getLogger("fraudstream.worker")

# A transaction call takes milliseconds on a healthy broker; this long means the broker is away,
# or librdkafka is stuck on it. Either way the producer is replaced (see the module docstring).
CALL_TIMEOUT_S = 15.0
# librdkafka does not always keep to a call's timeout (#5456): a call this much past it is given
# up on, left running on its helper thread.
CALL_GRACE_S = 5.0
# Each given-up call keeps a thread and its old producer alive until librdkafka lets go. Past this
# many at once the process cannot clean up after itself: it exits, and the supervisor restarts it
# (the restarted worker fences the open transaction and restores from a checkpoint, as after a
# SIGKILL).
MAX_ABANDONED_CALLS = 4
EXIT_TXN_HUNG = 70  # EX_SOFTWARE
RETRY_PAUSE_S = 1.0  # between attempts to get a new producer accepted by an absent broker


class TransactionStalledError(Exception):
    """A transaction call timed out, hung, or failed with a retriable error. The producer has
    been replaced; the open transaction is aborted and must be redone."""


class ProducerUnavailableError(RuntimeError):
    """The worker was asked to stop while waiting for a broker to accept a new producer."""


class TransactionalProducer:
    """One confluent-kafka producer at a time under a fixed ``transactional.id``; every
    transaction call is bounded, and one that stalls replaces the producer."""

    def __init__(
        self,
        config: dict[str, Any],
        *,
        keep_waiting: Callable[[], bool],
        on_stall: Callable[[str, str], None],
        call_timeout_s: float = CALL_TIMEOUT_S,
        grace_s: float = CALL_GRACE_S,
        client: Callable[[dict[str, Any]], Any] = Producer,
    ) -> None:
        """``keep_waiting`` is asked between attempts to get a new producer accepted (False: the
        worker is stopping); ``on_stall(what, why)`` is told about each stalled call. ``client``
        makes the confluent-kafka producer (tests pass a subclass that stalls on purpose)."""
        self._config = config
        self._keep_waiting = keep_waiting
        self._on_stall = on_stall
        self._timeout_s = call_timeout_s
        self._grace_s = grace_s
        self._client = client
        self._abandoned: list[threading.Thread] = []
        self._producer: Any = None

    def start(self) -> None:
        """Create the producer and register it with the coordinator; this fences an earlier
        incarnation of the same ``transactional.id``. Waits while the broker is away."""
        while True:
            self._producer = self._client(self._config)
            try:
                self._call("initialising", self._producer.init_transactions)
                return
            except TransactionStalledError as stalled:
                self._dispose()
                if not self._keep_waiting():
                    raise ProducerUnavailableError(str(stalled)) from stalled
                time.sleep(RETRY_PAUSE_S)

    def begin(self) -> None:
        self._producer.begin_transaction()

    def produce(self, topic: str, records: Sequence[OutRecord]) -> None:
        producer = self._producer
        produce = producer.produce
        for key, value, headers in records:
            while True:
                try:
                    produce(topic, value, key, headers=headers)
                    break
                except BufferError:  # local queue full: let librdkafka send some
                    producer.poll(0.05)

    def commit(self, offsets: list[TopicPartition], group_metadata: object) -> None:
        """Commit the open transaction with the consumed ``offsets`` (none: outputs only).
        Raises TransactionStalledError (producer replaced, transaction aborted) or the
        KafkaException of a failure that needs an abort (``txn_requires_abort``) or is fatal."""
        producer = self._producer
        try:
            if offsets:
                self._call(
                    "sending offsets",
                    lambda timeout: producer.send_offsets_to_transaction(
                        offsets, group_metadata, timeout
                    ),
                )
            self._call("committing", producer.commit_transaction)
        except TransactionStalledError:
            self._replace()
            raise

    def abort(self) -> None:
        """Abort the open transaction; if the abort itself stalls, replacing the producer
        aborts it instead."""
        try:
            self._call("aborting", self._producer.abort_transaction)
        except TransactionStalledError:
            self._replace()

    def flush(self, timeout: float) -> None:
        if self._producer is not None:
            self._producer.flush(timeout)

    def _replace(self) -> None:
        """Drop the current producer (its last reference goes with the helper thread of a call
        still running on it) and start a new one, which fences it."""
        self._dispose()
        self.start()

    def _dispose(self) -> None:
        """Let go of the current producer on a helper thread: destroying a librdkafka client
        waits for its threads, which a broker that does not answer can hold up."""
        old, self._producer = self._producer, None
        disposer = threading.Thread(target=_flush_quietly, args=(old,), name="kafka-dispose")
        disposer.daemon = True
        disposer.start()

    def _call(self, what: str, call: Callable[[float], object]) -> None:
        """``call(timeout)`` on a helper thread, so that a call librdkafka does not return from
        can be given up on."""
        finished = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                call(self._timeout_s)
            except BaseException as exc:  # re-raised on the caller's thread below
                failure.append(exc)
            finally:
                finished.set()

        thread = threading.Thread(target=run, name=f"kafka-{what.replace(' ', '-')}", daemon=True)
        thread.start()
        if not finished.wait(self._timeout_s + self._grace_s):
            self._abandon(thread)
            why = f"no answer in {self._timeout_s + self._grace_s:.0f} s"
            self._on_stall(what, why)
            raise TransactionStalledError(f"{what}: {why}")
        if not failure:
            return
        exc = failure[0]
        if isinstance(exc, KafkaException):
            error = exc.args[0]
            if error.retriable() and not error.txn_requires_abort() and not error.fatal():
                self._on_stall(what, str(error))
                raise TransactionStalledError(f"{what}: {error}") from exc
        raise exc

    def _abandon(self, thread: threading.Thread) -> None:
        self._abandoned = [t for t in self._abandoned if t.is_alive()]
        self._abandoned.append(thread)
        if len(self._abandoned) > MAX_ABANDONED_CALLS:
            log.critical(
                "%d Kafka transaction calls have not returned (stuck in librdkafka); exiting with "
                "code %d so that the supervisor restarts the worker",
                len(self._abandoned),
                EXIT_TXN_HUNG,
            )
            logging.shutdown()
            os._exit(EXIT_TXN_HUNG)


def _flush_quietly(producer: Any) -> None:
    """Runs on the dispose thread, which holds the last reference: the client is destroyed
    there when the thread ends."""
    try:
        producer.flush(0)
    except (KafkaException, RuntimeError) as exc:
        log.debug("disposing of a replaced producer: %s", exc)
