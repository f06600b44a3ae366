"""qbench.transports."""
