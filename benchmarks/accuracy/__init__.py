"""Accuracy benchmark on the fraud-detection handbook's simulator and protocol (see README.md)."""
