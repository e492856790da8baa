"""Fixture for postgres (being written)."""
