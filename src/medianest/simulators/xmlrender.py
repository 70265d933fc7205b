"""Render the simulators' JSON-shaped data as Plex-style XML.

PMS answers XML unless the request says ``Accept: application/json``, and both forms carry
the same data: the JSON ``{"MediaContainer": {...}}`` becomes ``<MediaContainer ...>``,
scalar fields become attributes (booleans as ``1``/``0``), arrays of objects become repeated
child elements and nested objects (``User``, ``Player``...) single child elements. The one
renaming is ``Metadata``: XML has no such element, an item is a ``<Video>`` (movie, episode,
clip), a ``<Directory>`` (show, season, artist, album), a ``<Track>`` or a ``<Photo>``.
plex.tv's v2 API uses the same convention with lower-case element names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import quoteattr

_METADATA_TAGS = {
    "movie": "Video",
    "episode": "Video",
    "clip": "Video",
    "track": "Track",
    "photo": "Photo",
}


def _attr(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def element(tag: str, data: Mapping[str, Any], out: list[str]) -> None:
    """Append the XML of one element named ``tag`` holding ``data`` to ``out``."""
    attrs: list[str] = []
    children: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            children.append((key, value))
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, Mapping):
                    child_tag = key
                    if key == "Metadata":
                        child_tag = _METADATA_TAGS.get(str(item.get("type")), "Directory")
                    children.append((child_tag, item))
        else:
            text = _attr(value)
            if text is not None:
                attrs.append(f" {key}={quoteattr(text)}")
    out.append(f"<{tag}{''.join(attrs)}")
    if not children:
        out.append(" />")
        return
    out.append(">")
    for child_tag, child in children:
        element(child_tag, child, out)
    out.append(f"</{tag}>")


def render(tag: str, data: Mapping[str, Any]) -> bytes:
    """A complete XML document whose root element is ``tag``."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n']
    element(tag, data, out)
    out.append("\n")
    return "".join(out).encode()


def render_list(tag: str, item_tag: str, items: list[Mapping[str, Any]]) -> bytes:
    """A root element ``tag`` (with a ``size``) holding one ``item_tag`` per item."""
    return render(tag, {"size": len(items), item_tag: list(items)})
