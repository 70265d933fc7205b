"""NATS JetStream broker (nats-py): ``nats://[user:password@]host:4222[?prefix=...]``.

Options (keyword, or URL query for the plain ones): ``prefix`` — subject root and stream
name, letters, digits, ``-`` and ``_`` (default ``medianest``); ``visibility_timeout`` — the
consumers' ack wait in seconds (30); ``retry``, the default :class:`RetryPolicy`;
``drain_timeout`` (10); ``timeout`` seconds for a publish acknowledgement or any other
JetStream call (5); ``heartbeat`` seconds between idle heartbeats of a pull request, after
two of which without a word it is assumed lost (5); ``max_age`` seconds the stream keeps a
message (7 days; 0 for ever); ``lag_interval`` (5); ``metrics``.

Layout for the prefix ``p``:

* stream ``p`` over ``p.>`` on file storage, limits retention: a message stays ``max_age``
  (a group that has not handled a message by then loses it: watch the lag). Interest
  retention (a message deleted once every matching group acked it) would bound the stream
  by itself, but nats-server 2.9 lost acknowledged publishes with it when restarted while
  they were being delivered (this backend's restart test, and plain nats-py alike), so it
  is not used. Topic ``a.b`` is subject ``p.a.b._``: the final ``_`` makes ``#`` exact.
  A pattern ``a.#`` (zero or more words) becomes ``p.a.>`` (NATS ``>`` is one or more
  tokens), which then matches ``p.a._`` (topic ``a``) too; ``*`` stays ``*``, and a pattern
  without ``#`` ends in ``._`` as well, so word counts match exactly;
* one durable pull consumer per group, named after the group (``.`` → ``~``), filtered on its
  pattern, explicit acks, ``ack_wait`` = visibility timeout, delivering messages published
  after it was created; a group has one pattern (ValidationError for another);
* stream ``p-dlq`` over ``p-dlq.<topic>``: the dead letters
  (:mod:`~medianest.messaging.backends.nats_dead_letters`).

A publish is acknowledged by JetStream (stored) before it returns and carries the message
id as ``Nats-Msg-Id``, so a publish retried within the stream's duplicate window (2 minutes)
is stored once. While the connection is down publish raises BackendUnavailable at once; the
client reconnects forever in the background and consumers resume by themselves.

**Retries** are ``nak`` with the policy's delay, so JetStream redelivers the message to the
group later; ``attempt`` is the delivery count JetStream keeps (``num_delivered``), which
also counts deliveries whose consumer died before acknowledging (redelivered after the ack
wait). ``max_deliver`` is left unlimited: the consumer dead-letters a message itself once it
failed ``max_attempts`` times, or when it comes round a further time (its last consumer
died), so a message never stops silently in the stream the way it would after a server-side
``max_deliver`` (which only emits an advisory). **Replay** publishes the message again on
its topic with a ``Medianest-Group`` header: the other groups acknowledge it unseen.
**Ordering**: a stream is ordered, but parallel consumers and naks reorder, so per-key
order is not guaranteed (``ordered_keys = False``). **Lag**: the consumer's ``num_pending``
(not yet delivered) + ``num_ack_pending`` (delivered, being handled or waiting for a retry).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import (
    ConnectionClosedError,
    ConnectionReconnectingError,
    NoRespondersError,
    NoServersError,
    OutboundBufferLimitError,
    StaleConnectionError,
)
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StreamConfig
from nats.js.errors import APIError, NoStreamResponseError, ServiceUnavailableError
from nats.js.errors import NotFoundError as JsNotFound

from medianest.backends import mask_url
from medianest.errors import (
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    ValidationError,
)
from medianest.messaging.backends.delivery import error_text
from medianest.messaging.backends.nats_consumer import NatsSubscription
from medianest.messaging.backends.nats_dead_letters import NatsDeadLetters
from medianest.messaging.backends.upkeep import LagCache, broker_options
from medianest.messaging.base import (
    Broker,
    DeadLetter,
    Handler,
    Message,
    RetryPolicy,
    check_group,
    check_pattern,
)
from medianest.messaging.metrics import MessagingMetrics
from medianest.messaging.wire import encode
from medianest.observability import get_logger

_log = get_logger("medianest.messaging.nats")
_PREFIX = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_DEFAULTS: dict[str, Any] = {
    "prefix": "medianest",
    "visibility_timeout": 30.0,
    "drain_timeout": 10.0,
    "timeout": 5.0,
    "heartbeat": 5.0,
    "lag_interval": 5.0,
    "max_age": 7 * 24 * 3600.0,
    "retry": None,
    "metrics": None,
}
_UNREACHABLE = (
    ConnectionClosedError,
    ConnectionReconnectingError,
    NoRespondersError,
    NoServersError,
    OutboundBufferLimitError,
    StaleConnectionError,
    ServiceUnavailableError,
    NoStreamResponseError,  # JetStream not (yet) serving the stream, e.g. just restarted
    TimeoutError,
    OSError,
)


def pattern_subject(prefix: str, pattern: str) -> str:
    """The subject filter of a topic pattern (see the module docstring)."""
    if pattern == "#":
        return f"{prefix}.>"
    if pattern.endswith(".#"):
        return f"{prefix}.{pattern[:-2]}.>"
    return f"{prefix}.{pattern}._"


class NatsBroker(Broker):
    """The NATS JetStream broker (see the module docstring)."""

    ordered_keys = False

    def __init__(self, url: str, **options: Any) -> None:
        driver_url, merged = broker_options(url, _DEFAULTS, options)
        self.url = url
        self.prefix = str(merged["prefix"])
        if not _PREFIX.match(self.prefix):
            raise ConfigurationError(
                f"NATS broker prefix {self.prefix!r} must be letters, digits, '-' or '_'",
                problems=[("messaging.prefix", self.prefix, "[A-Za-z0-9_-]+")],
            )
        self.visibility_timeout = float(merged["visibility_timeout"])
        self.drain_timeout = float(merged["drain_timeout"])
        self.timeout = float(merged["timeout"])
        self.heartbeat = float(merged["heartbeat"])
        self.max_age = float(merged["max_age"])
        self.retry: RetryPolicy = merged["retry"] or RetryPolicy()
        self.metrics: MessagingMetrics = merged["metrics"] or MessagingMetrics.for_registry()
        self._lag = LagCache(self._read_lag, float(merged["lag_interval"]))
        self.dead = NatsDeadLetters(self)
        self.stream = self.prefix
        self.dlq_stream = f"{self.prefix}-dlq"
        self._driver_url = driver_url.rstrip("?")
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._subscriptions: set[NatsSubscription] = set()
        self._closing = False

    def __repr__(self) -> str:
        return f"NatsBroker({mask_url(self.url)!r}, prefix={self.prefix!r})"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> NatsBroker:
        return cls(url, **options)

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise BackendUnavailable("nats broker is not started", backend=mask_url(self.url))
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise BackendUnavailable("nats broker is not started", backend=mask_url(self.url))
        return self._js

    def subject(self, topic: str) -> str:
        return f"{self.prefix}.{topic}._"

    def topic_of(self, subject: str) -> str:
        return subject.removeprefix(self.prefix + ".").removesuffix("._")

    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """The one place nats-py errors become MediaNest errors."""
        try:
            yield
        except _UNREACHABLE as exc:
            raise BackendUnavailable(
                f"nats unreachable while {doing}: {error_text(exc)}", backend=mask_url(self.url)
            ) from exc
        except NatsError as exc:
            raise BackendError(
                f"nats failed while {doing}: {error_text(exc)}", backend=mask_url(self.url)
            ) from exc

    async def start(self) -> None:
        """Connect (reconnecting forever afterwards) and create the two streams."""
        if self._nc is not None:
            return
        with self.errors("connecting"):
            self._nc = await nats.connect(
                servers=[self._driver_url],
                name=f"medianest broker {self.prefix}",
                connect_timeout=self.timeout,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
            self._js = self._nc.jetstream(timeout=self.timeout)
            await self._ensure_stream(
                StreamConfig(
                    name=self.stream,
                    subjects=[f"{self.prefix}.>"],
                    retention=RetentionPolicy.LIMITS,
                    max_age=self.max_age or None,
                )
            )
            await self._ensure_stream(
                StreamConfig(name=self.dlq_stream, subjects=[f"{self.dlq_stream}.>"])
            )
        self.metrics.attach(self)

    async def _ensure_stream(self, config: StreamConfig) -> None:
        assert config.name is not None
        try:
            await self.js.stream_info(config.name)
        except JsNotFound:
            await self.js.add_stream(config)

    async def _on_error(self, exc: Exception) -> None:
        _log.debug("broker connection error", backend="nats", error=error_text(exc))

    async def _on_disconnected(self) -> None:
        if not self._closing:
            _log.warning("broker connection lost; reconnecting", backend="nats")

    async def _on_reconnected(self) -> None:
        _log.info("broker connection back", backend="nats", url=mask_url(self.url))
        for subscription in list(self._subscriptions):
            subscription.reconnected()

    async def close(self) -> None:
        for subscription in list(self._subscriptions):
            await subscription.close()
        await self._lag.stop()
        self.metrics.detach(self)
        self._closing = True
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            with contextlib.suppress(NatsError, OSError):
                await nc.close()

    async def ping(self) -> None:
        if not self.nc.is_connected:
            raise BackendUnavailable("nats connection is down", backend=mask_url(self.url))
        with self.errors("pinging"):
            await self.nc.flush(timeout=max(1, round(self.timeout)))

    async def publish(self, message: Message) -> None:
        """Publish on the topic's subject and wait for JetStream's acknowledgement.

        What :meth:`publish_raw` (nats-py's ``js.publish``) does, reading the reply
        without making a ``PubAck`` of it (a dataclass built field by field)."""
        message, text = encode(message)
        nc = self._connected()
        with self.errors("publishing"):
            try:
                reply = await nc.request(
                    self.subject(message.topic),
                    text.encode(),
                    timeout=self.timeout,
                    headers={"Nats-Msg-Id": message.id},
                )
            except NoRespondersError:
                raise NoStreamResponseError from None
            answer = json.loads(reply.data)
            if "error" in answer:
                raise APIError.from_error(answer["error"])
        self.metrics.published(message.topic)

    async def publish_raw(self, subject: str, body: bytes, headers: dict[str, str]) -> None:
        """Publish ``body`` on ``subject`` and wait for JetStream's acknowledgement."""
        js = self.js
        self._connected()
        with self.errors("publishing"):
            await js.publish(subject, body, timeout=self.timeout, headers=headers)

    def _connected(self) -> Client:
        """The connection to publish on; BackendUnavailable while it is down (nats-py is
        reconnecting) or not there (the broker is not started, or closed)."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise BackendUnavailable(
                "nats connection is down (reconnecting); not published", backend=mask_url(self.url)
            )
        return nc

    async def subscribe(
        self,
        pattern: str,
        group: str,
        handler: Handler,
        *,
        retry: RetryPolicy | None = None,
        concurrency: int = 1,
    ) -> NatsSubscription:
        check_pattern(pattern)
        check_group(group)
        durable = group.replace(".", "~")
        wanted = pattern_subject(self.prefix, pattern)
        with self.errors("subscribing"):
            try:
                info = await self.js.consumer_info(self.stream, durable)
                if info.config.filter_subject != wanted:
                    raise ValidationError(
                        f"consumer group {group!r} is subscribed to {info.config.filter_subject!r}"
                        f"; a group has one pattern, so {pattern!r} needs another group",
                        errors={"pattern": "differs from the group's"},
                    )
            except JsNotFound:
                await self.js.add_consumer(
                    self.stream,
                    ConsumerConfig(
                        durable_name=durable,
                        filter_subject=wanted,
                        ack_policy=AckPolicy.EXPLICIT,
                        ack_wait=self.visibility_timeout,
                        max_deliver=-1,
                        max_ack_pending=-1,
                        deliver_policy=DeliverPolicy.NEW,
                    ),
                )
            subscription = NatsSubscription(
                self, group, durable, handler, retry or self.retry, concurrency
            )
            await subscription.start()
        self._subscriptions.add(subscription)
        self._lag.start()
        return subscription

    def forget(self, subscription: NatsSubscription) -> None:
        self._subscriptions.discard(subscription)

    # -- dead letters (nats_dead_letters) ------------------------------------------------

    async def dead_letters(
        self, topic: str | None = None, group: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        return await self.dead.scan(topic, group, limit)

    async def dead_letter(self, dead_letter_id: str) -> DeadLetter:
        return await self.dead.get(dead_letter_id)

    async def replay(self, dead_letter_id: str) -> Message:
        """Publish the message (attempt 1) for its group only, then delete the dead letter."""
        return await self.dead.replay(dead_letter_id)

    async def purge(self, topic: str | None = None, group: str | None = None) -> int:
        return await self.dead.purge(topic, group)

    # -- lag ------------------------------------------------------------------------------

    def lag(self) -> dict[str, int] | None:
        """Messages not yet acked per group this broker consumes, as read every
        ``lag_interval`` seconds."""
        return self._lag.value

    async def refresh_lag(self) -> dict[str, int]:
        """Read the lag now (what :meth:`lag` reports from then on)."""
        return await self._lag.refresh()

    async def _read_lag(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        with self.errors("reading consumer lag"):
            for durable, group in sorted({(s.durable, s.group) for s in self._subscriptions}):
                info = await self.js.consumer_info(self.stream, durable)
                totals[group] = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        return totals
