"""The factory's version: one place, read by packaging and by every actor's health report."""

__version__ = "0.1.0"
