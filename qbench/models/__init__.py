"""qbench.models."""
