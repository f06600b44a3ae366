"""qbench.methods."""
