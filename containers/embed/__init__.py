"""Sentence embeddings (MiniLM), quantized to int8 with a scale so they fit on-chain."""
