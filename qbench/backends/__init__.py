"""qbench.backends."""
