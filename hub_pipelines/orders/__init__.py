"""The orders domain: intake, catalog, the order transaction, payment, ledger, outbox, notifications.

Plain Python on the ports of `hub_pipelines.core.ports`; no Dagster here.
"""
