"""Fixture for redis (being written)."""
