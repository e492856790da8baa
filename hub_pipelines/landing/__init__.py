"""The landing layer: arrivals (uploads, topic messages) recorded durably, idempotently and countably."""
