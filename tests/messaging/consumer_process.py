"""A broker consumer in a process of its own, for tests that kill it (``SIGKILL``).

``python -m tests.messaging.consumer_process <url> <options JSON> <pattern> <group>``
subscribes, prints ``ready``, and for every message prints ``got <id> <attempt>`` and then
hangs in its handler forever, never acknowledging: the test kills it there.
"""

from __future__ import annotations

import asyncio
import json
import sys

from medianest.messaging import Message, create_broker


async def main(url: str, options: dict[str, object], pattern: str, group: str) -> None:
    async def hang(message: Message) -> None:
        print(f"got {message.id} {message.attempt}", flush=True)
        await asyncio.Event().wait()

    async with create_broker(url, **options) as broker:
        await broker.subscribe(pattern, group, hang)
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    url, options, pattern, group = sys.argv[1], json.loads(sys.argv[2]), *sys.argv[3:5]
    asyncio.run(main(url, options, pattern, group))
