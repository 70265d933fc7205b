"""Messages to and from their JSON text, as every backend stores or sends them.

:func:`encode` is what ``publish`` does first on every backend: it checks the topic, adds a
W3C ``traceparent`` header when the publisher did not set one (the current OpenTelemetry
context when a span is recording, else a fresh trace id, so a message can always be followed
from publisher to handlers), and turns the envelope into JSON, refusing payloads that JSON
cannot carry. :func:`decode` reads the text back with the attempt number of a delivery.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import Any

from opentelemetry import propagate

from medianest.errors import ValidationError
from medianest.messaging.base import Message, check_topic


def new_traceparent() -> str:
    """A W3C trace context started here (not sampled: no tracer recorded it). Trace ids must
    be unique, not unguessable; a zero id is invalid, hence the ``or 1``."""
    return f"00-{random.getrandbits(128) or 1:032x}-{random.getrandbits(64) or 1:016x}-00"


def _traced(headers: Mapping[str, str]) -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    traced = {**headers, **carrier}
    traced.setdefault("traceparent", new_traceparent())
    return traced


_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False)
_CHECKED_TOPICS: set[str] = set()
"""Topics already found valid in this process (a check per publish costs a regex match)."""


def encode(message: Message) -> tuple[Message, str]:
    """The message as it will be delivered (attempt 1, traced) and its JSON envelope.

    Raises :class:`~medianest.errors.ValidationError` for an invalid topic, non-string
    headers, or a payload that is not JSON (sets, bytes, NaN, objects...).
    """
    if message.topic not in _CHECKED_TOPICS:
        check_topic(message.topic)
        if len(_CHECKED_TOPICS) < 10_000:
            _CHECKED_TOPICS.add(message.topic)
    headers = message.headers
    if not all(type(k) is str and type(v) is str for k, v in headers.items()) and not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ValidationError(
            "message headers must map strings to strings", errors={"headers": "invalid"}
        )
    if "traceparent" not in headers:
        message = message.changed(headers=_traced(headers), attempt=1)
    elif message.attempt != 1:
        message = message.changed(attempt=1)
    try:
        text = _JSON.encode(message.to_wire())
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"message payload is not JSON: {exc}", errors={"payload": "not JSON"}
        ) from exc
    return message, text


def decode(text: str | bytes, attempt: int | None = None) -> Message:
    """The message of an envelope, with ``attempt`` set when given; ValidationError when
    the text is not an envelope this hub can read."""
    try:
        if type(text) is bytes:
            # a str skips json's guess of the encoding (Python code, for every message)
            try:  # noqa: SIM105 (contextlib.suppress costs more than the guess)
                text = text.decode()
            except UnicodeDecodeError:
                pass  # UTF-16/32 JSON: json.loads finds out
        data: Any = json.loads(text)
    except ValueError as exc:
        raise ValidationError(f"malformed message envelope: {exc}") from exc
    return Message.from_wire(data, attempt)
