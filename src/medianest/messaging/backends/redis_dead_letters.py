"""Dead letters of :mod:`medianest.messaging.backends.redis`: the stream ``p:dlq``.

Each entry holds the envelope as it failed (``m``), the group (``g``), the last error
(``e``), the attempts (``a``) and the time (``t``); its stream id is the dead letter's id,
so reading one is an XRANGE of that id. Listing and filtered purges page through the
stream, oldest first (an operator's queue, not millions); replay appends the message
(attempt 1) to ``p:r:<group>`` and deletes the entry in one MULTI.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from medianest.errors import NotFoundError
from medianest.messaging.base import DeadLetter, Message
from medianest.messaging.wire import decode, encode

if TYPE_CHECKING:
    from medianest.messaging.backends.redis import RedisStreamsBroker

_ENTRY_ID = re.compile(r"^\d+-\d+$")


class RedisDeadLetters:
    """The dead-letter stream of one broker."""

    def __init__(self, broker: RedisStreamsBroker) -> None:
        self.broker = broker

    def add(self, pipe: Any, group: str, error: str, attempts: int, text: str) -> None:
        """Queue the XADD of a dead letter on ``pipe`` (a MULTI that also acks it)."""
        fields = {"m": text, "g": group, "e": error, "a": str(attempts)}
        pipe.xadd(self.broker.key("dlq"), {**fields, "t": datetime.now(UTC).isoformat()})

    @staticmethod
    def _letter(entry_id: str, fields: dict[str, str]) -> DeadLetter:
        return DeadLetter(
            id=entry_id,
            message=decode(fields["m"]),
            group=fields["g"],
            error=fields["e"],
            attempts=int(fields["a"]),
            failed_at=datetime.fromisoformat(fields["t"]),
        )

    async def scan(self, topic: str | None, group: str | None, limit: int) -> list[DeadLetter]:
        found: list[DeadLetter] = []
        start = "-"
        async with self.broker.errors("reading dead letters", self.broker.timeout * 10):
            while len(found) < limit:
                page: Any = await self.broker.client.xrange(
                    self.broker.key("dlq"), min=start, max="+", count=500
                )
                for entry_id, fields in page:
                    letter = self._letter(entry_id, fields)
                    topic_ok = topic is None or letter.message.topic == topic
                    if topic_ok and (group is None or letter.group == group):
                        found.append(letter)
                if len(page) < 500:
                    break
                start = "(" + page[-1][0]
        return found[: max(0, limit)]

    async def get(self, dead_letter_id: str) -> DeadLetter:
        if not _ENTRY_ID.match(dead_letter_id):
            raise NotFoundError(f"no dead letter {dead_letter_id!r}")
        async with self.broker.errors("reading a dead letter"):
            entries: Any = await self.broker.client.xrange(
                self.broker.key("dlq"), dead_letter_id, dead_letter_id
            )
        if not entries:
            raise NotFoundError(f"no dead letter {dead_letter_id!r}")
        return self._letter(*entries[0])

    async def replay(self, dead_letter_id: str) -> Message:
        """Append the message (attempt 1) to its group's own stream and delete the dead
        letter, in one transaction."""
        letter = await self.get(dead_letter_id)
        message, text = encode(letter.message)
        async with (
            self.broker.errors("replaying a dead letter"),
            self.broker.client.pipeline() as pipe,
        ):
            pipe.xadd(self.broker.key("r", letter.group), {"m": text})
            pipe.xdel(self.broker.key("dlq"), dead_letter_id)
            await pipe.execute()
        return message

    async def purge(self, topic: str | None, group: str | None) -> int:
        if topic is None and group is None:
            async with (
                self.broker.errors("purging dead letters"),
                self.broker.client.pipeline() as pipe,
            ):
                pipe.xlen(self.broker.key("dlq"))
                pipe.delete(self.broker.key("dlq"))
                count, _ = await pipe.execute()
            return int(count)
        ids = [letter.id for letter in await self.scan(topic, group, 1 << 62)]
        async with self.broker.errors("purging dead letters"):
            for start in range(0, len(ids), 500):
                await self.broker.client.xdel(self.broker.key("dlq"), *ids[start : start + 500])
        return len(ids)
