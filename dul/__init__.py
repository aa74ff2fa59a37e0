"""Data-Use Ledger: shared core (contracts, chain, keys) and the `dul` CLI."""
