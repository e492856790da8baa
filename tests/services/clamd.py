"""Fixture for clamd (being written)."""
