"""qbench.suite."""
