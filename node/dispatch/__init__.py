"""dispatch layer of the Infera node."""
