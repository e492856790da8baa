"""Fixture for kafka (being written)."""
