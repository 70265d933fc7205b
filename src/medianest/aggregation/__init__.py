"""Aggregation: unified search over every source, with a last-good-answer cache."""

from medianest.aggregation.cache import CACHES, AnswerCache, CachedValue, create_cache
from medianest.aggregation.search import (
    Availability,
    IntegrationAggregator,
    SearchHit,
    SearchResult,
    Source,
    SourceReport,
    SourceState,
    merge,
)

__all__ = [
    "CACHES",
    "AnswerCache",
    "Availability",
    "CachedValue",
    "IntegrationAggregator",
    "SearchHit",
    "SearchResult",
    "Source",
    "SourceReport",
    "SourceState",
    "create_cache",
    "merge",
]
