"""Sensors that turn arrivals (uploads, topic messages) into runs."""
