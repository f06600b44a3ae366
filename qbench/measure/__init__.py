"""qbench.measure."""
