"""`qbench tune`: the search space (space), the staged search (search), the finalists'
interleaved timing (finals)."""
