"""The media request aggregate: what someone asked for, and what became of it.

States and the commands that move between them::

    (new)      --request-->        requested
    requested  --submit-->         submitted
    submitted  --approve-->        approved    | --decline--> declined
    approved   --mark_available--> available
    requested | submitted | approved --fail-->   failed
    requested | submitted | approved --cancel--> cancelled

``declined``, ``available``, ``failed`` and ``cancelled`` are final. Any other command is
refused with a :class:`~medianest.errors.ValidationError` naming the request, the command,
its current state and the states the command needs.

Events (stream ``request-<id>``, all at schema version 1; the outbox publishes them as the
topics in :data:`TOPICS`):

=================== ==================================================================
MediaRequested      ``media_type`` (movie | tv), ``tmdb_id``, ``title``, ``requested_by``,
                    ``seasons`` (tv only, may be empty = all)
RequestSubmitted    ``upstream_id`` (the id Overseerr/Jellyseerr gave the request)
RequestApproved     ``by``
RequestDeclined     ``by``, ``reason``
MediaAvailable      ``plex_rating_key`` (may be null)
RequestFailed       ``reason``
RequestCancelled    ``by``, ``reason``
RequestCreated      the whole request once the ``request-media`` saga has made it
                    (:mod:`medianest.media_requests.saga`); no change of state
=================== ==================================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from medianest.errors import ValidationError
from medianest.events.aggregates import Aggregate

RequestState = Literal[
    "requested", "submitted", "approved", "declined", "available", "failed", "cancelled"
]

FINAL_STATES: frozenset[str] = frozenset({"declined", "available", "failed", "cancelled"})

TOPICS: Mapping[str, str] = {
    "MediaRequested": "requests.requested",
    "RequestSubmitted": "requests.submitted",
    "RequestApproved": "requests.approved",
    "RequestDeclined": "requests.declined",
    "MediaAvailable": "requests.available",
    "RequestFailed": "requests.failed",
    "RequestCancelled": "requests.cancelled",
    "RequestCreated": "request.created",
}
"""Broker topic of each event type (used by :func:`medianest.events.outbox.default_topic`)."""

_STATE_AFTER: Mapping[str, RequestState] = {
    "MediaRequested": "requested",
    "RequestSubmitted": "submitted",
    "RequestApproved": "approved",
    "RequestDeclined": "declined",
    "MediaAvailable": "available",
    "RequestFailed": "failed",
    "RequestCancelled": "cancelled",
}
_MEDIA_TYPES = ("movie", "tv")


def _text(field: str, value: object, *, optional: bool = False) -> str:
    if optional and value is None:
        return ""
    if not isinstance(value, str) or not value.strip() or len(value) > 500:
        raise ValidationError(
            f"{field} must be a non-empty string of at most 500 characters",
            errors={field: "invalid"},
        )
    return value.strip()


class MediaRequest(Aggregate):
    """One request for a movie or a show (module docstring)."""

    category = "request"
    kind = "media request"
    event_schemas = dict.fromkeys(TOPICS, 1)

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.state: RequestState | None = None
        self.media_type: str | None = None
        self.tmdb_id: int | None = None
        self.title: str | None = None
        self.requested_by: str | None = None
        self.seasons: list[int] = []
        self.upstream_id: str | None = None
        self.decided_by: str | None = None
        self.reason: str | None = None
        self.plex_rating_key: str | None = None

    # -- commands ------------------------------------------------------------------------

    def request(
        self,
        *,
        media_type: str,
        tmdb_id: int,
        title: str,
        requested_by: str,
        seasons: Sequence[int] = (),
    ) -> None:
        """Create the request (only once: a second ``request`` is refused)."""
        self._need("request", (None,))
        if media_type not in _MEDIA_TYPES:
            raise ValidationError(
                f"media_type must be one of {', '.join(_MEDIA_TYPES)}, not {media_type!r}",
                errors={"media_type": "invalid"},
            )
        if isinstance(tmdb_id, bool) or not isinstance(tmdb_id, int) or tmdb_id <= 0:
            raise ValidationError("tmdb_id must be a positive int", errors={"tmdb_id": "invalid"})
        chosen = sorted(set(seasons))
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in chosen):
            raise ValidationError("seasons must be ints >= 0", errors={"seasons": "invalid"})
        if chosen and media_type != "tv":
            raise ValidationError("only a tv request has seasons", errors={"seasons": "movie"})
        self.record(
            "MediaRequested",
            {
                "media_type": media_type,
                "tmdb_id": tmdb_id,
                "title": _text("title", title),
                "requested_by": _text("requested_by", requested_by),
                "seasons": chosen,
            },
        )

    def submit(self, upstream_id: str) -> None:
        """Overseerr (or Jellyseerr) accepted the request under ``upstream_id``."""
        self._need("submit", ("requested",))
        self.record("RequestSubmitted", {"upstream_id": _text("upstream_id", upstream_id)})

    def approve(self, by: str) -> None:
        self._need("approve", ("submitted",))
        self.record("RequestApproved", {"by": _text("by", by)})

    def decline(self, by: str, reason: str = "") -> None:
        self._need("decline", ("submitted",))
        self.record("RequestDeclined", {"by": _text("by", by), "reason": reason})

    def mark_available(self, plex_rating_key: str | None = None) -> None:
        """The media is in the Plex library."""
        self._need("mark_available", ("approved",))
        key = None if plex_rating_key is None else _text("plex_rating_key", plex_rating_key)
        self.record("MediaAvailable", {"plex_rating_key": key})

    def fail(self, reason: str) -> None:
        self._need("fail", ("requested", "submitted", "approved"))
        self.record("RequestFailed", {"reason": _text("reason", reason)})

    def cancel(self, by: str, reason: str = "") -> None:
        self._need("cancel", ("requested", "submitted", "approved"))
        self.record("RequestCancelled", {"by": _text("by", by), "reason": reason})

    def _need(self, command: str, allowed: Sequence[str | None]) -> None:
        self.require(command, self.state, allowed)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    # -- events --------------------------------------------------------------------------

    def when(self, event_type: str, data: Mapping[str, Any]) -> None:
        state = _STATE_AFTER.get(event_type)
        if state is None:
            return
        self.state = state
        if event_type == "MediaRequested":
            self.media_type = data["media_type"]
            self.tmdb_id = data["tmdb_id"]
            self.title = data["title"]
            self.requested_by = data["requested_by"]
            self.seasons = list(data.get("seasons") or [])
        elif event_type == "RequestSubmitted":
            self.upstream_id = data["upstream_id"]
        elif event_type in ("RequestApproved", "RequestDeclined", "RequestCancelled"):
            self.decided_by = data.get("by")
            self.reason = data.get("reason") or None
        elif event_type == "RequestFailed":
            self.reason = data.get("reason")
        elif event_type == "MediaAvailable":
            self.plex_rating_key = data.get("plex_rating_key")

    def to_snapshot(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "media_type": self.media_type,
            "tmdb_id": self.tmdb_id,
            "title": self.title,
            "requested_by": self.requested_by,
            "seasons": list(self.seasons),
            "upstream_id": self.upstream_id,
            "decided_by": self.decided_by,
            "reason": self.reason,
            "plex_rating_key": self.plex_rating_key,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.state = state["state"]
        self.media_type = state["media_type"]
        self.tmdb_id = state["tmdb_id"]
        self.title = state["title"]
        self.requested_by = state["requested_by"]
        self.seasons = list(state["seasons"])
        self.upstream_id = state["upstream_id"]
        self.decided_by = state["decided_by"]
        self.reason = state["reason"]
        self.plex_rating_key = state["plex_rating_key"]
