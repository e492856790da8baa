"""The analytics workflow: site events become raw rows, counters, rollups, anomaly scores and alerts."""
