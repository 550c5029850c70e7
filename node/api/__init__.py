"""api layer of the Infera node."""
