"""The model-server runtime shared by every Infera container."""
