"""Fixture for chdb (being written)."""
