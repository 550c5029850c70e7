"""LLM model server: an instruct model whose answers a contract can act on (see model.py)."""
