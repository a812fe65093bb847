"""The extender's pure core: placement, scoring and the reservation ledger. No I/O, no adapters."""
