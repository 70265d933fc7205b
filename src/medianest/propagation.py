"""What hub instances tell each other through the broker.

* ``security.api_key.changed`` ``{"key_id"}`` — a key was revoked or rotated: every other
  instance drops it from its verification cache at once (not after ``cache_ttl``);
* ``security.user.changed`` ``{"user_id"}`` — a person was disabled, deleted or changed
  role: every instance drops their cached sessions;
* ``services.health.changed`` ``{"instance_id", "service", "kind", "state", "reason"}`` —
  a registration or health change seen by this instance's health checks, for anyone who
  subscribes (the realtime push, later).

Invalidations are broadcast: each instance subscribes in its own consumer group
(``hub-<host>-<port>``, stable across restarts, so a restarted instance resumes its queue
rather than leaving one behind), and skips the messages it published itself. Publishing
happens in the background: a change is never held back, or failed, by a broker outage;
the other instances then notice within their cache TTLs, as before messaging.
"""

from __future__ import annotations

import asyncio
import re
import socket
from typing import Any

from medianest.discovery.base import Change
from medianest.errors import MediaNestError
from medianest.messaging import Broker, Message, Subscription
from medianest.observability import get_logger

_log = get_logger("medianest.propagation")
API_KEY_CHANGED = "security.api_key.changed"
USER_CHANGED = "security.user.changed"
HEALTH_CHANGED = "services.health.changed"


def instance_group(port: int) -> str:
    """This instance's own consumer group: its host and port."""
    host = re.sub(r"[^a-z0-9_.-]", "-", socket.gethostname().lower())[:80]
    return f"hub-{host}-{port}"


class Propagation:
    """Publish this instance's invalidations and apply the others'."""

    def __init__(self, broker: Broker, group: str, *, api_keys: Any, sessions: Any) -> None:
        self.broker = broker
        self.group = group
        self.api_keys = api_keys
        self.sessions = sessions
        self._subscription: Subscription | None = None
        self._pending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._subscription = await self.broker.subscribe("security.#", self.group, self._apply)
        if self.api_keys is not None:
            self.api_keys.listeners.append(self.key_changed)

    async def close(self) -> None:
        if self.api_keys is not None and self.key_changed in self.api_keys.listeners:
            self.api_keys.listeners.remove(self.key_changed)
        if self._subscription is not None:
            await self._subscription.close()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def key_changed(self, key_id: str) -> None:
        self._publish(API_KEY_CHANGED, {"key_id": key_id})

    def user_changed(self, user_id: str) -> None:
        self._publish(USER_CHANGED, {"user_id": user_id})

    async def health_changed(self, change: Change) -> None:
        found = change.registration
        payload = {
            "instance_id": change.instance_id,
            "service": change.name,
            "kind": change.kind,
            "state": found.state.value if found is not None else None,
            "reason": found.reason if found is not None else "",
        }
        self._publish(HEALTH_CHANGED, payload)

    def _publish(self, topic: str, payload: dict[str, Any]) -> None:
        message = Message(topic, payload, headers={"origin": self.group})
        task = asyncio.get_running_loop().create_task(self._send(message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(self, message: Message) -> None:
        try:
            await self.broker.publish(message)
        except MediaNestError as exc:
            _log.warning("could not tell other instances", topic=message.topic, error=exc.message)

    async def _apply(self, message: Message) -> None:
        if message.headers.get("origin") == self.group:
            return
        payload = message.payload if isinstance(message.payload, dict) else {}
        if message.topic == API_KEY_CHANGED and self.api_keys is not None:
            self.api_keys.invalidate(str(payload.get("key_id", "")))
        elif message.topic == USER_CHANGED and self.sessions is not None:
            self.sessions.invalidate_user(str(payload.get("user_id", "")))
