"""qbench.power."""
