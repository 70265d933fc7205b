"""Broker backends, one module per technology."""
