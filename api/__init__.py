"""The bank-facing HTTP API (docs/api.md).

Imports only ``scoring``; talks to the stream over Kafka.
"""
