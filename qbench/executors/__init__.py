"""qbench.executors."""
