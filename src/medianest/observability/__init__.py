"""Logs (structlog), metrics (Prometheus) and, later, traces (OpenTelemetry)."""

from medianest.observability.logging import configure_logging, get_logger, redact

__all__ = ["configure_logging", "get_logger", "redact"]
