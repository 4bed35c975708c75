"""Bridgehead: take an organization's AI from pilot to production, with governance built in."""

__version__ = "0.1.0"

__all__ = ["__version__"]
