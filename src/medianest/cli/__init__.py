"""The ``medianest`` command."""

from medianest.cli.main import app, main

__all__ = ["app", "main"]
