"""Where a run stands in the run queue (Dagster's `dagster/priority` tag: higher starts first; equal
priorities start in submission order).

A landing run carries the freshness of its topic (and, for orders, the customers' payments), so it
leaves the queue before anything else waiting for the same run slots or pool. Day rebuilds are
catch-up work and go last. Without this, chdb's one-run `warehouse` pool let a queue of day rebuilds
started ahead of the events landing hold it back for minutes (chaos run, seed 7).
"""

LANDING_PRIORITY = {"dagster/priority": "10"}
CATCH_UP_PRIORITY = {"dagster/priority": "-10"}
