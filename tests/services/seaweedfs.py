"""Fixture for seaweedfs (being written)."""
