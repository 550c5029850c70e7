"""chain layer of the Infera node."""
