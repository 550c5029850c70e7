"""Infera model servers: a shared runtime and one package per model."""
