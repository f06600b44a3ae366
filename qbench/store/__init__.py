"""qbench.store."""
