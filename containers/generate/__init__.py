"""Text generation with any causal LM, greedy (deterministic) so redundant nodes agree on the answer."""
