"""Local stand-ins for third-party HTTP APIs that have no server we could run (Stripe, an SMS provider)."""
