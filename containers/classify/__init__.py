"""Text classifier server: zero-shot over MiniLM sentence embeddings, labels described in words."""
