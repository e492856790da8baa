"""The orders workflow: signed order events become an order ledger."""
