"""Analytics domain logic: event model, rollups and anomaly detection (no Dagster imports)."""
