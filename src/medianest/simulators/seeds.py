"""Deterministic numbers for the generated catalogue: the hash and the time/key layout.

Kept apart from :mod:`medianest.simulators.data` so the item classes and the catalogue can
both use them without importing each other.
"""

from __future__ import annotations

T0 = 1_420_070_400  # 2015-01-01T00:00:00Z: addedAt of uid 0
STEP = 3_000  # seconds between consecutive uids' addedAt
SEASON_KEY_BASE = 200_000_000
EPISODE_KEY_BASE = 1_000_000_000
_MASK = (1 << 64) - 1


def mix(*parts: int) -> int:
    """A fast, well-spread 64-bit hash of integers (splitmix64 finaliser per part)."""
    h = 0x9E3779B97F4A7C15
    for part in parts:
        h = ((h ^ (part & _MASK)) * 0xBF58476D1CE4E5B9) & _MASK
        h ^= h >> 31
    h = (h * 0x94D049BB133111EB) & _MASK
    return h ^ (h >> 29)


def hex24(value: int) -> str:
    """24 hex digits (the length of a Plex ``plex://`` guid id) derived from ``value``."""
    return f"{value & _MASK:016x}{mix(value, 3) & 0xFFFFFFFF:08x}"
