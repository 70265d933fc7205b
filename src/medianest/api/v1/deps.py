"""Typed access to the parts the app put on ``app.state`` (the API never imports app.py)."""

from __future__ import annotations

from fastapi import Request

from medianest.aggregation import IntegrationAggregator
from medianest.integrations.registry import Integrations


def integrations(request: Request) -> Integrations:
    found: Integrations = request.app.state.integrations
    return found


def aggregator(request: Request) -> IntegrationAggregator:
    found: IntegrationAggregator = request.app.state.aggregator
    return found


def simulated(request: Request) -> bool:
    """Whether the upstreams are MediaNest's own simulators (``medianest demo``)."""
    return bool(getattr(request.app.state, "simulated", False))
