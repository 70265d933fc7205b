"""Adapters for the services MediaNest integrates, on one HTTP client layer."""
