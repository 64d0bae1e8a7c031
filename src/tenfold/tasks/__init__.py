"""Synthetic tasks and task streams, generated in code (nothing is downloaded)."""
