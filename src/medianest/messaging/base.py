"""The message broker: the envelope, the subscription, and the contract every backend keeps.

A :class:`Message` is one versioned JSON envelope (DESIGN.md convention 8)::

    {"v": 1, "id": "<UUIDv7>", "topic": "requests.approved", "payload": {...},
     "timestamp": "2026-11-24T05:21:17.123456Z", "correlation_id": "...",
     "causation_id": "...", "headers": {"traceparent": "00-...", ...}, "attempt": 1,
     "key": "<ordering key or null>"}

``id`` is time-ordered (UUIDv7), so ids sort by publication time. ``attempt`` counts
deliveries of this message to its group (1 on the first). ``key`` asks for per-key ordering
where the backend can give it.

**Topics and patterns.** Topics are dot-separated words (``[a-z0-9_-]+``), e.g.
``services.health.changed``. A subscription pattern matches word by word: ``*`` matches
exactly one word, ``#`` (last position only) matches zero or more words — the AMQP topic
syntax, which NATS (``*`` / ``>``) and the others are mapped onto. :func:`topic_matches` is
the reference.

A **consumer group** is a named queue: it exists from the first ``subscribe`` with that group
on, and from then on receives every message published to a topic matching one of its
patterns, whether or not a consumer is running (like a durable RabbitMQ queue). Members of a
group are expected to subscribe with the same pattern: a member may be handed any message
routed to its group.

**Contract** (fixed by ``tests/contracts/test_messaging.py`` over every backend):

* **at-least-once**: a published message whose ``publish`` returned is delivered to every
  group subscribed to a matching pattern at the time of publication, until a handler of that
  group returns without raising (then it is acked);
* **consumer groups**: within one group each message goes to one consumer; every group gets
  every message;
* **retries**: a handler that raises gets the message again after an exponential backoff
  (``RetryPolicy``: a delayed redelivery, never a hot loop), with ``attempt`` incremented;
* **dead letters**: after ``max_attempts`` the message goes to the dead-letter queue of its
  topic and group, as a :class:`DeadLetter` with the error text, the attempt count and the
  original headers; dead letters can be listed, read, replayed to their topic (as a new
  delivery to that group, attempt 1) and purged;
* **shutdown**: ``close`` stops taking new messages, lets running handlers finish (within
  ``drain_timeout``), and never acks a message whose handler did not finish;
* **ordering**: per ``key`` where the backend documents it (:attr:`Broker.ordered_keys`):
  a group then hands a key's messages to its handlers one at a time, in publication order,
  a retried message holding back the later ones of its key;
* **crashes**: a handler that never finishes (its task cancelled, its process killed) does not
  ack; the message comes back to the group, and every delivery counts as an attempt, so a
  message that keeps killing its consumers is dead-lettered after ``max_attempts`` too;
* driver failures become :class:`~medianest.errors.BackendError` /
  :class:`~medianest.errors.BackendUnavailable`, translated in one place per backend.
"""

from __future__ import annotations

import random
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from medianest.backends import BackendBase, BackendEntry, BackendTable
from medianest.errors import NotFoundError, ValidationError

WIRE_VERSION = 1
_WORD = r"[a-z0-9_-]+"
_TOPIC = re.compile(rf"^{_WORD}(\.{_WORD})*$")
_PATTERN = re.compile(rf"^({_WORD}|\*)(\.({_WORD}|\*))*(\.#)?$|^#$")
_GROUP = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")


_last_uuid7 = [0, 0]  # [milliseconds, counter] of the previous id
_uuid7_lock = threading.Lock()
_UUID7_BITS = (0x7 << 76) | (0b10 << 62)  # the version and variant fields


def uuid7() -> str:
    """A time-ordered UUIDv7 (RFC 9562): 48-bit Unix milliseconds, a 12-bit counter that
    keeps ids made in the same millisecond in order (method 1 of section 6.2), 62 random
    bits. Ids of one process sort in the order they were made.

    The random bits come from :mod:`random` (reseeded in a forked child), not the OS: ids
    must be unique, not secret, and this runs for every message published."""
    with _uuid7_lock:
        millis = max(time.time_ns() // 1_000_000, _last_uuid7[0])
        counter = _last_uuid7[1] + 1 if millis == _last_uuid7[0] else 0
        if counter > 0xFFF:
            millis, counter = millis + 1, 0
        _last_uuid7[0], _last_uuid7[1] = millis, counter
    value = ((millis & ((1 << 48) - 1)) << 80) | (counter << 64) | _UUID7_BITS
    h = f"{value | random.getrandbits(62):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def check_topic(topic: str) -> str:
    if not _TOPIC.match(topic) or len(topic) > 200:
        raise ValidationError(
            f"invalid topic {topic!r}: dot-separated words of [a-z0-9_-]",
            errors={"topic": "invalid"},
        )
    return topic


def check_pattern(pattern: str) -> str:
    if not _PATTERN.match(pattern) or len(pattern) > 200:
        raise ValidationError(
            f"invalid topic pattern {pattern!r}: words, '*' for one word, a final '#' for any",
            errors={"pattern": "invalid"},
        )
    return pattern


def check_group(group: str) -> str:
    if not _GROUP.match(group):
        raise ValidationError(
            f"invalid consumer group {group!r}: [a-z0-9_.-], up to 100 characters",
            errors={"group": "invalid"},
        )
    return group


def topic_matches(pattern: str, topic: str) -> bool:
    """Whether ``topic`` matches ``pattern`` (``*`` one word, a final ``#`` any number)."""
    want, have = pattern.split("."), topic.split(".")
    if want and want[-1] == "#":
        head = want[:-1]
        return len(have) >= len(head) and all(
            w in ("*", h) for w, h in zip(head, have, strict=False)
        )
    return len(want) == len(have) and all(w in ("*", h) for w, h in zip(want, have, strict=True))


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Message:
    """One message as published and delivered (see the module docstring for the wire form)."""

    topic: str
    payload: Any
    id: str = field(default_factory=uuid7)
    timestamp: datetime = field(default_factory=_now)
    correlation_id: str | None = None
    causation_id: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    attempt: int = 1
    key: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "v": WIRE_VERSION,
            "id": self.id,
            "topic": self.topic,
            "payload": self.payload,
            "timestamp": self.timestamp.isoformat().replace("+00:00", "Z"),
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "headers": dict(self.headers),
            "attempt": self.attempt,
            "key": self.key,
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any], attempt: int | None = None) -> Message:
        """Parse an envelope (with ``attempt`` instead of its own when given);
        ValidationError for a version or shape this hub cannot read."""
        if type(data) is not dict and not isinstance(data, Mapping):
            raise ValidationError("malformed message envelope: not a JSON object")
        if data.get("v") != WIRE_VERSION:
            raise ValidationError(f"unsupported message envelope version {data.get('v')!r}")
        try:
            headers = data.get("headers") or {}
            if not all(type(k) is str and type(v) is str for k, v in headers.items()):
                headers = {str(k): str(v) for k, v in headers.items()}
            return cls.checked(
                topic=str(data["topic"]),
                payload=data.get("payload"),
                id=str(data["id"]),
                timestamp=datetime.fromisoformat(str(data["timestamp"])),
                correlation_id=data.get("correlation_id"),
                causation_id=data.get("causation_id"),
                headers=headers,
                attempt=int(data.get("attempt", 1)) if attempt is None else attempt,
                key=data.get("key"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValidationError(f"malformed message envelope: {exc}") from exc

    @classmethod
    def checked(cls, **fields: Any) -> Message:
        """A message of field values already checked, every field given, made without
        ``__init__``: a frozen dataclass sets each field through ``object.__setattr__``,
        which is most of what making one costs, and this runs for every message sent or
        received. Equality, hashing and ``replace`` are the dataclass's own."""
        message = object.__new__(cls)
        message.__dict__.update(fields)
        return message

    def changed(self, **changes: Any) -> Message:
        """A copy with ``changes`` (field values already checked), like
        :func:`dataclasses.replace` without ``__init__`` (see :meth:`checked`)."""
        message = object.__new__(type(self))
        message.__dict__.update(self.__dict__, **changes)
        return message


@dataclass(frozen=True)
class RetryPolicy:
    """Delayed redelivery after a failed handler: ``initial * multiplier**(attempt-1)``,
    capped at ``maximum``; dead-lettered once ``max_attempts`` deliveries failed."""

    max_attempts: int = 5
    initial: float = 0.5
    multiplier: float = 2.0
    maximum: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.initial < 0 or self.multiplier < 1 or self.maximum < 0:
            raise ValidationError(
                "invalid retry policy: max_attempts >= 1, initial >= 0, multiplier >= 1, "
                "maximum >= 0",
                errors={"retry": "invalid"},
            )

    def delay(self, attempt: int) -> float:
        return float(min(self.maximum, self.initial * self.multiplier ** max(0, attempt - 1)))


@dataclass(frozen=True)
class DeadLetter:
    """A message that failed ``attempts`` times in ``group``; ``error`` is the last error."""

    id: str
    message: Message
    group: str
    error: str
    attempts: int
    failed_at: datetime


Handler = Callable[[Message], Awaitable[None]]


class Subscription(ABC):
    """A running consumer; ``close`` stops it gracefully (in-flight handlers finish)."""

    @abstractmethod
    async def close(self) -> None: ...


class Broker(BackendBase, ABC):
    """The broker contract (module docstring); backends live in ``messaging/backends``."""

    ordered_keys: bool = False

    @abstractmethod
    async def publish(self, message: Message) -> None:
        """Store ``message`` durably (or raise); delivery happens after this returns."""

    @abstractmethod
    async def subscribe(
        self,
        pattern: str,
        group: str,
        handler: Handler,
        *,
        retry: RetryPolicy | None = None,
        concurrency: int = 1,
    ) -> Subscription:
        """Deliver messages matching ``pattern`` to ``handler`` as a member of ``group``."""

    @abstractmethod
    async def dead_letters(
        self, topic: str | None = None, group: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        """Dead letters, oldest first, optionally of one topic and/or group."""

    async def dead_letter(self, dead_letter_id: str) -> DeadLetter:
        """One dead letter; :class:`~medianest.errors.NotFoundError` when there is none.

        This default scans :meth:`dead_letters`; backends with an index override it."""
        for letter in await self.dead_letters(limit=1_000_000):
            if letter.id == dead_letter_id:
                return letter
        raise NotFoundError(f"no dead letter {dead_letter_id!r}")

    @abstractmethod
    async def replay(self, dead_letter_id: str) -> Message:
        """Deliver a dead letter to its group again (attempt 1) and remove it; the message.

        :class:`~medianest.errors.NotFoundError` when there is no such dead letter."""

    @abstractmethod
    async def purge(self, topic: str | None = None, group: str | None = None) -> int:
        """Delete dead letters (all, or of a topic and/or group); how many."""

    async def ping(self) -> None:
        """Raise :class:`~medianest.errors.BackendUnavailable` when the broker is down."""
        return None

    def lag(self) -> Mapping[str, int] | None:
        """Messages not yet acked per group (waiting, delayed or being handled), as last
        seen without blocking; ``None`` when the backend does not expose it. Read by the
        ``medianest_messaging_lag`` gauge at scrape time."""
        return None


BROKERS: BackendTable[Broker] = BackendTable(
    "messaging",
    {
        "memory": "medianest.messaging.backends.memory:MemoryBroker",
        "sqlite": "medianest.messaging.backends.sqlite:SqliteBroker",
        "sqlite+aiosqlite": "medianest.messaging.backends.sqlite:SqliteBroker",
        "redis": BackendEntry("medianest.messaging.backends.redis:RedisStreamsBroker", "redis"),
        "rediss": BackendEntry("medianest.messaging.backends.redis:RedisStreamsBroker", "redis"),
        "amqp": BackendEntry("medianest.messaging.backends.amqp:AmqpBroker", "amqp"),
        "amqps": BackendEntry("medianest.messaging.backends.amqp:AmqpBroker", "amqp"),
        "nats": BackendEntry("medianest.messaging.backends.nats:NatsBroker", "nats"),
    },
)
