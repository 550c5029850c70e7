"""jobs layer of the Infera node."""
