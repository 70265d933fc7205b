"""A hub process that starts a saga and hangs inside step ``b`` (after its effect) until
the test kills it with SIGKILL: ``python -m tests.sagas.crash_worker URL DIR SAGA_ID``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from medianest.events.backends.sql import SqlEventStore
from medianest.sagas import SagaOrchestrator
from tests.sagas.ledger import FileLedger


async def main(url: str, directory: str, saga_id: str) -> None:
    ledger = FileLedger(Path(directory), hang_step="b")
    async with SqlEventStore.from_url(url) as store:
        orchestrator = SagaOrchestrator(store, [ledger.definition()], owner="doomed", lease_ttl=30)
        await orchestrator.start("order", saga_id, {"movie": 603})


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
