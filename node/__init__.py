"""Infera node: watches the coordinator, runs models in local containers, delivers results on-chain."""

__version__ = "0.1.0"
