"""Request and response transforms of a route: header edits, JSON edits, Plex XML to JSON.

Header edits follow Kong's request/response transformer: ``remove`` first, then ``set``
(replaces every value of the header, names compared case-insensitively), then ``add``
(appends another value). Headers written by ``set`` and ``add`` get lower-case names, as
ASGI and HTTP/2 want.

JSON edits address fields by dotted path: ``MediaContainer.size``; ``*`` stands for every
item of a list (or every value of an object), ``results.*.id``; a number for one list item,
``results.0``. ``remove`` runs before ``rename``. A rename's new name is a plain key
(``"results.*.id" = "tmdbId"``) or the same path with another last segment
(``"results.*.id" = "results.*.tmdbId"``); the field keeps its place in its object. A dot
inside a key cannot be addressed.

:func:`plex_xml_to_json` is the protocol adapter for clients that only speak JSON to a Plex
server that answers XML. Plex's JSON is its XML with a few conventions, reproduced here:

* the root element becomes ``{"MediaContainer": {...}}``; attributes become fields;
* library items (``Video``, ``Track``, ``Photo``, ``Episode``, ``Playlist``..., and a
  ``Directory`` that has a ``ratingKey``: a show, season, artist or album) are listed under
  ``Metadata``; other children under their tag (``Directory``, ``Hub``, ``Media``, ``Part``,
  ``Genre``, ``Guid``, ``Role``, ``Location``...), always as arrays, except ``User``,
  ``Player``, ``Session`` and ``TranscodeSession``, which are single objects;
* attribute values are typed as Plex types them: counts, sizes, times and ``...At`` /
  ``...Count`` / ``...ID`` fields are integers, ratings floats, flags such as ``allowSync``
  booleans; ids like ``ratingKey``, ``key``, ``guid`` and everything unknown stay strings.

``librarySectionID`` stays a string on a playback session (an item with a ``sessionKey``),
as PMS sends it. Known differences from PMS's own JSON: a new attribute that PMS types as a
number but that matches none of the rules above stays a string; element text is dropped (PMS
puts none in library answers); empty arrays are absent (XML cannot tell them apart, and PMS
omits them too). Documents with a ``<!DOCTYPE`` (hence entity declarations) are
refused, so entity expansion and external entities can never happen.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from xml.parsers import expat

from medianest.config.gateway import HeaderEdits, JsonEdits
from medianest.errors import UpstreamContractError

__all__ = ["PlexXmlError", "edit_headers", "edit_json", "plex_xml_to_json"]


def edit_headers(headers: list[tuple[str, str]], edits: HeaderEdits) -> list[tuple[str, str]]:
    """``headers`` after ``edits`` (a new list; the input is not changed)."""
    if not (edits.remove or edits.set or edits.add):
        return list(headers)
    dropped = {name.lower() for name in (*edits.remove, *edits.set)}
    out = [(k, v) for k, v in headers if k.lower() not in dropped]
    out.extend((name.lower(), value) for name, value in edits.set.items())
    out.extend((name.lower(), value) for name, value in edits.add.items())
    return out


def edit_json(body: bytes, edits: JsonEdits) -> bytes | None:
    """The edited body as compact JSON, or None when it is over ``max_bytes`` or not JSON."""
    if len(body) > edits.max_bytes:
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    for path in edits.remove:
        parts = path.split(".")
        for parent, key in reversed(list(_locate(data, parts))):
            del parent[key]
    for path, target in edits.rename.items():
        parts = path.split(".")
        new = _new_name(path, target)
        for parent, key in list(_locate(data, parts)):
            if isinstance(parent, dict) and key != new:
                _rename(parent, str(key), new)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _locate(node: Any, parts: list[str]) -> Iterator[tuple[Any, Any]]:
    """Every ``(container, key)`` that the dotted path ``parts`` names inside ``node``."""
    head, rest = parts[0], parts[1:]
    if isinstance(node, dict):
        keys: list[Any] = list(node) if head == "*" else [head] if head in node else []
    elif isinstance(node, list):
        if head == "*":
            keys = list(range(len(node)))
        else:
            keys = [int(head)] if head.isdigit() and int(head) < len(node) else []
    else:
        return
    for key in keys:
        if rest:
            yield from _locate(node[key], rest)
        else:
            yield node, key


def _new_name(source: str, target: str) -> str:
    parent, _, last = target.rpartition(".")
    return last if parent and parent == source.rpartition(".")[0] else target


def _rename(obj: dict[str, Any], old: str, new: str) -> None:
    items = list(obj.items())
    obj.clear()
    for key, value in items:
        if key == old:
            obj[new] = value
        elif key != new:
            obj[key] = value


class PlexXmlError(UpstreamContractError):
    """A Plex answer that is not well-formed XML, or that declares a DTD or entities."""

    def __init__(self, message: str) -> None:
        super().__init__(message, service="plex")


_ITEM_TAGS = frozenset(
    {"Video", "Track", "Photo", "Episode", "Movie", "Clip", "Playlist", "Album", "Artist"}
)
_SINGLE_TAGS = frozenset({"User", "Player", "Session", "TranscodeSession"})
_STRING_ID_TAGS = frozenset({"User", "Account", "Session", "Guid", "TranscodeSession"})
# fmt: off
_INT_FIELDS = frozenset({
    "size", "count", "totalSize", "offset", "year", "parentYear", "duration", "index",
    "parentIndex", "absoluteIndex", "viewOffset", "bandwidth", "bitrate", "bitDepth", "channels",
    "audioChannels", "samplingRate", "height", "width", "hidden", "streamType", "mediaTagVersion",
    "transcoderActiveVideoSessions", "peakBitrate", "refFrames", "level", "time", "remaining",
    "musicAnalysisVersion"
})
_FLOAT_FIELDS = frozenset({
    "rating", "audienceRating", "userRating", "aspectRatio", "frameRate", "score", "progress",
    "speed"
})
_BOOL_FIELDS = frozenset({
    "allowSync", "allowCameraUpload", "allowChannelAccess", "allowMediaDeletion", "allowSharing",
    "allowTuners", "claimed", "refreshing", "local", "relayed", "relay", "secure", "more",
    "myPlex", "myPlexSubscription", "transcoderAudio", "transcoderVideo", "transcoderPhoto",
    "transcoderLyrics", "transcoderSubtitles", "content", "directory", "filters", "mixedParents",
    "owned", "has64bitOffsets", "hasVoiceActivity", "selected", "forced", "closedCaptions",
    "hearingImpaired", "smart", "search", "hubSearch", "promoted", "pluginHost", "readOnly",
    "sync", "synced", "throttled", "complete", "home", "protected", "restricted"
})
# fmt: on
_INTEGER = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")


def plex_xml_to_json(body: bytes) -> bytes:
    """Plex XML turned into the JSON Plex itself sends (compact, UTF-8).

    Raises :class:`PlexXmlError` for XML that is malformed or declares a DTD.
    """
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    stack: list[dict[str, Any]] = []
    roots: list[tuple[str, dict[str, Any]]] = []

    def start(tag: str, attrs: dict[str, str]) -> None:
        obj = {name: _typed(tag, name, text) for name, text in attrs.items()}
        if "sessionKey" in attrs and "librarySectionID" in attrs:
            obj["librarySectionID"] = attrs["librarySectionID"]
        if stack:
            _attach(stack[-1], _json_key(tag, attrs), obj)
        else:
            roots.append((tag, obj))
        stack.append(obj)

    def end(tag: str) -> None:
        stack.pop()

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(body, True)
    except expat.ExpatError as exc:
        raise PlexXmlError(f"Plex answered malformed XML: {exc}") from exc
    tag, root = roots[0]
    return json.dumps({tag: root}, ensure_ascii=False, separators=(",", ":")).encode()


def _refuse(*_: object) -> None:
    raise PlexXmlError("Plex answered XML with a DOCTYPE or entity declaration; refused")


def _json_key(tag: str, attrs: dict[str, str]) -> str:
    if tag in _ITEM_TAGS or (tag == "Directory" and "ratingKey" in attrs):
        return "Metadata"
    return tag


def _attach(parent: dict[str, Any], key: str, obj: dict[str, Any]) -> None:
    if key in _SINGLE_TAGS:
        parent[key] = obj
        return
    existing = parent.get(key)
    if isinstance(existing, list):
        existing.append(obj)
    else:
        parent[key] = [obj]


def _typed(tag: str, name: str, text: str) -> Any:
    """An attribute value with the JSON type PMS gives that field."""
    if name in _BOOL_FIELDS:
        if text in ("1", "true"):
            return True
        if text in ("0", "false"):
            return False
        return text
    if name in _FLOAT_FIELDS:
        return float(text) if _DECIMAL.fullmatch(text) else text
    integral = (
        name in _INT_FIELDS
        or name.endswith(("At", "Count"))
        or (name.endswith("ID") and name[-3:-2].islower())
        or (name == "id" and tag not in _STRING_ID_TAGS)
    )
    if integral and _INTEGER.fullmatch(text):
        return int(text)
    return text
