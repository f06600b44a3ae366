"""qbench.datasets."""
