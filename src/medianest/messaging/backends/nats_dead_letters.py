"""Dead letters of :mod:`medianest.messaging.backends.nats`: the stream ``p-dlq``.

A dead letter is a message on ``p-dlq.<topic>`` whose data is JSON ``{"m": envelope, "g":
group, "e": error, "a": attempts, "t": time}``; its sequence number in the stream is its id.
Listing walks the stream with direct gets (``next_by_subj``, filtered by topic when one is
given), oldest first; replay publishes the message again on its topic with the
``Medianest-Group`` header (only that group handles it) and deletes the dead letter.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from nats.js.errors import NotFoundError as JsNotFound

from medianest.errors import NotFoundError
from medianest.messaging.backends.delivery import envelope
from medianest.messaging.backends.nats_consumer import REPLAY_HEADER
from medianest.messaging.base import DeadLetter, Message
from medianest.messaging.wire import decode, encode

if TYPE_CHECKING:
    from medianest.messaging.backends.nats import NatsBroker


class NatsDeadLetters:
    """The dead-letter stream of one broker."""

    def __init__(self, broker: NatsBroker) -> None:
        self.broker = broker

    async def add(self, message: Message, group: str, error: str, attempts: int) -> None:
        body = {
            "m": envelope(message),
            "g": group,
            "e": error,
            "a": attempts,
            "t": datetime.now(UTC).isoformat(),
        }
        data = json.dumps(body, separators=(",", ":")).encode()
        await self.broker.publish_raw(f"{self.broker.dlq_stream}.{message.topic}", data, {})

    def _dead_letter(self, seq: int, data: bytes | None) -> DeadLetter:
        body = json.loads(data or b"{}")
        return DeadLetter(
            id=str(seq),
            message=decode(body["m"]),
            group=body["g"],
            error=body["e"],
            attempts=int(body["a"]),
            failed_at=datetime.fromisoformat(body["t"]),
        )

    async def scan(self, topic: str | None, group: str | None, limit: int) -> list[DeadLetter]:
        found: list[DeadLetter] = []
        subject = f"{self.broker.dlq_stream}.{topic}" if topic else f"{self.broker.dlq_stream}.>"
        seq = 1
        with self.broker.errors("reading dead letters"):
            while len(found) < limit:
                try:
                    raw = await self.broker.js.get_msg(
                        self.broker.dlq_stream, seq=seq, subject=subject, next=True
                    )
                except JsNotFound:
                    break
                assert raw.seq is not None
                letter = self._dead_letter(raw.seq, raw.data)
                if group is None or letter.group == group:
                    found.append(letter)
                seq = raw.seq + 1
        return found

    async def get(self, dead_letter_id: str) -> DeadLetter:
        missing = NotFoundError(f"no dead letter {dead_letter_id!r}")
        if not dead_letter_id.isdigit() or int(dead_letter_id) < 1:
            raise missing
        with self.broker.errors("reading a dead letter"):
            try:
                raw = await self.broker.js.get_msg(self.broker.dlq_stream, seq=int(dead_letter_id))
            except JsNotFound as exc:
                raise missing from exc
        return self._dead_letter(int(dead_letter_id), raw.data)

    async def replay(self, dead_letter_id: str) -> Message:
        """Publish the message (attempt 1) for its group only, then delete the dead letter."""
        letter = await self.get(dead_letter_id)
        message, text = encode(letter.message)
        await self.broker.publish_raw(
            self.broker.subject(message.topic), text.encode(), {REPLAY_HEADER: letter.group}
        )
        with self.broker.errors("deleting a replayed dead letter"):
            await self.broker.js.delete_msg(self.broker.dlq_stream, int(letter.id))
        return message

    async def purge(self, topic: str | None, group: str | None) -> int:
        if topic is None and group is None:
            with self.broker.errors("purging dead letters"):
                info = await self.broker.js.stream_info(self.broker.dlq_stream)
                await self.broker.js.purge_stream(self.broker.dlq_stream)
            return int(info.state.messages)
        letters = await self.scan(topic, group, 1 << 62)
        with self.broker.errors("purging dead letters"):
            for letter in letters:
                await self.broker.js.delete_msg(self.broker.dlq_stream, int(letter.id))
        return len(letters)
