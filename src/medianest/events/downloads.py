"""The download aggregate: one YouTube playlist (or video) fetched into the Plex library.

States and the commands that move between them::

    (new)                --queue-->    queued
    queued               --start-->    downloading
    downloading          --progress--> downloading   (percent 0..100, bytes so far)
    downloading          --complete--> completed
    queued | downloading --fail-->     failed
    queued | downloading --cancel-->   cancelled

``completed``, ``failed`` and ``cancelled`` are final. Any other command is refused with a
:class:`~medianest.errors.ValidationError` naming the download, the command, its current
state and the states the command needs; bad arguments (a percent above 100, negative
bytes) are refused the same way, before any event exists.

Events (stream ``download-<id>``, schema version 1; topics in :data:`TOPICS`):

=================== ==================================================================
DownloadQueued      ``url``, ``title``, ``requested_by``, ``target`` (library folder)
DownloadStarted     (nothing)
DownloadProgressed  ``percent`` (float), ``bytes`` (int)
DownloadCompleted   ``path``, ``bytes``
DownloadFailed      ``reason``
DownloadCancelled   ``by``, ``reason``
=================== ==================================================================

Progress can be reported often; give the repository ``snapshot_every`` so that loading a
long download does not replay every progress event.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from medianest.errors import ValidationError
from medianest.events.aggregates import Aggregate

DownloadState = Literal["queued", "downloading", "completed", "failed", "cancelled"]

FINAL_STATES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

TOPICS: Mapping[str, str] = {
    "DownloadQueued": "downloads.queued",
    "DownloadStarted": "downloads.started",
    "DownloadProgressed": "downloads.progress",
    "DownloadCompleted": "downloads.completed",
    "DownloadFailed": "downloads.failed",
    "DownloadCancelled": "downloads.cancelled",
}
"""Broker topic of each event type (used by :func:`medianest.events.outbox.default_topic`)."""

_STATE_AFTER: Mapping[str, DownloadState] = {
    "DownloadQueued": "queued",
    "DownloadStarted": "downloading",
    "DownloadProgressed": "downloading",
    "DownloadCompleted": "completed",
    "DownloadFailed": "failed",
    "DownloadCancelled": "cancelled",
}


def _text(field: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 2000:
        raise ValidationError(
            f"{field} must be a non-empty string of at most 2000 characters",
            errors={field: "invalid"},
        )
    return value.strip()


def _bytes(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"bytes must be an int >= 0, not {value!r}", errors={"bytes": "bad"})
    return value


class Download(Aggregate):
    """One download (module docstring)."""

    category = "download"
    kind = "download"
    event_schemas = dict.fromkeys(TOPICS, 1)

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.state: DownloadState | None = None
        self.url: str | None = None
        self.title: str | None = None
        self.requested_by: str | None = None
        self.target: str | None = None
        self.percent = 0.0
        self.bytes = 0
        self.path: str | None = None
        self.reason: str | None = None

    # -- commands ------------------------------------------------------------------------

    def queue(self, *, url: str, title: str, requested_by: str, target: str = "") -> None:
        """Create the download (only once)."""
        self._need("queue", (None,))
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise ValidationError(f"url must be an http(s) URL, not {url!r}", errors={"url": "bad"})
        self.record(
            "DownloadQueued",
            {
                "url": url,
                "title": _text("title", title),
                "requested_by": _text("requested_by", requested_by),
                "target": target,
            },
        )

    def start(self) -> None:
        self._need("start", ("queued",))
        self.record("DownloadStarted", {})

    def progress(self, percent: float, bytes: int) -> None:
        """``percent`` done (0 to 100) and ``bytes`` fetched so far."""
        self._need("progress", ("downloading",))
        if (
            isinstance(percent, bool)
            or not isinstance(percent, int | float)
            or not math.isfinite(percent)
            or not 0 <= percent <= 100
        ):
            raise ValidationError(
                f"percent must be between 0 and 100, not {percent!r}", errors={"percent": "bad"}
            )
        self.record("DownloadProgressed", {"percent": float(percent), "bytes": _bytes(bytes)})

    def complete(self, path: str, bytes: int) -> None:
        """The file (or folder) is at ``path`` in the library, ``bytes`` in all."""
        self._need("complete", ("downloading",))
        self.record("DownloadCompleted", {"path": _text("path", path), "bytes": _bytes(bytes)})

    def fail(self, reason: str) -> None:
        self._need("fail", ("queued", "downloading"))
        self.record("DownloadFailed", {"reason": _text("reason", reason)})

    def cancel(self, by: str, reason: str = "") -> None:
        self._need("cancel", ("queued", "downloading"))
        self.record("DownloadCancelled", {"by": _text("by", by), "reason": reason})

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
        if event_type == "DownloadQueued":
            self.url = data["url"]
            self.title = data["title"]
            self.requested_by = data["requested_by"]
            self.target = data.get("target") or ""
        elif event_type == "DownloadProgressed":
            self.percent = float(data["percent"])
            self.bytes = int(data["bytes"])
        elif event_type == "DownloadCompleted":
            self.percent = 100.0
            self.bytes = int(data["bytes"])
            self.path = data["path"]
        elif event_type in ("DownloadFailed", "DownloadCancelled"):
            self.reason = data.get("reason") or None

    def to_snapshot(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "url": self.url,
            "title": self.title,
            "requested_by": self.requested_by,
            "target": self.target,
            "percent": self.percent,
            "bytes": self.bytes,
            "path": self.path,
            "reason": self.reason,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.state = state["state"]
        self.url = state["url"]
        self.title = state["title"]
        self.requested_by = state["requested_by"]
        self.target = state["target"]
        self.percent = float(state["percent"])
        self.bytes = int(state["bytes"])
        self.path = state["path"]
        self.reason = state["reason"]
