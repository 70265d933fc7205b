"""Dead letters through the admin API (``/admin/dead-letters``) and ``medianest dlq``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fastapi import APIRouter, FastAPI
from typer.testing import CliRunner

from medianest.api import problems
from medianest.api.v1 import admin_dlq
from medianest.cli import dlq
from medianest.messaging import Broker, Message, RetryPolicy
from medianest.messaging.backends.memory import MemoryBroker
from medianest.messaging.backends.sqlite import SqliteBroker
from medianest.security.roles import ADMIN, Principal, Role
from tests.support.brokers import Inbox, dead_letters_of
from tests.support.servers import serve_asgi

ONCE = RetryPolicy(max_attempts=1)


async def always_fail(message: Message) -> None:
    raise LookupError(f"no handler for {message.payload['n']}")


async def make_dead_letters(broker: Broker, count: int) -> None:
    subscriptions = [
        await broker.subscribe("alpha.*", "first", always_fail, retry=ONCE),
        await broker.subscribe("beta.*", "second", always_fail, retry=ONCE),
    ]
    for n in range(count):
        topic = "alpha.job" if n % 2 == 0 else "beta.job"
        await broker.publish(Message(topic, {"n": n}, headers={"x-n": str(n)}))
        await dead_letters_of(broker, n + 1)
    for subscription in subscriptions:
        await subscription.close()


# -- the admin API ---------------------------------------------------------------------------


@pytest.fixture
async def api() -> AsyncIterator[tuple[str, MemoryBroker]]:
    async with MemoryBroker(drain_timeout=1.0) as broker:
        app = FastAPI()
        problems.install(app)
        v1 = APIRouter(prefix="/api/v1")
        v1.include_router(admin_dlq.router)
        app.include_router(v1)
        app.state.broker = broker
        admin = Principal(
            kind="user", id="u1", name="admin", role=Role.ADMIN, scopes=frozenset({ADMIN})
        )
        app.dependency_overrides[admin_dlq.require_dlq_admin] = lambda: admin
        async with serve_asgi(app) as server:
            yield f"{server.url}/api/v1/admin/dead-letters", broker


async def call(method: str, url: str, **options: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(method, url, **options) as answer:
        return answer.status, await answer.json(content_type=None)


async def test_the_api_lists_shows_replays_and_purges(api: tuple[str, MemoryBroker]) -> None:
    url, broker = api
    await make_dead_letters(broker, 3)

    status, listed = await call("GET", url)
    assert status == 200
    assert [(d["topic"], d["group"], d["attempts"]) for d in listed] == [
        ("alpha.job", "first", 1),
        ("beta.job", "second", 1),
        ("alpha.job", "first", 1),
    ]
    assert listed[0]["error"] == "LookupError: no handler for 0"
    assert listed[0]["message"]["headers"]["x-n"] == "0"
    assert listed[0]["message"]["v"] == 1
    status, filtered = await call("GET", url, params={"group": "second", "limit": "5"})
    assert [d["id"] for d in filtered] == [listed[1]["id"]]
    status, _ = await call("GET", url, params={"limit": "0"})
    assert status == 422

    status, shown = await call("GET", f"{url}/{listed[0]['id']}")
    assert (status, shown) == (200, listed[0])
    status, missing = await call("GET", f"{url}/nope")
    assert status == 404
    assert missing["type"].endswith("/not-found")

    inbox = Inbox()
    subscription = await broker.subscribe("alpha.*", "first", inbox)
    status, replayed = await call("POST", f"{url}/{listed[0]['id']}/replay")
    assert status == 200
    assert replayed["group"] == "first"
    assert replayed["message"]["id"] == listed[0]["message"]["id"]
    assert replayed["message"]["attempt"] == 1
    [again] = await inbox.wait_count(1)
    assert again.id == listed[0]["message"]["id"]
    await subscription.close()

    status, purged = await call("DELETE", url, params={"topic": "alpha.job"})
    assert (status, purged) == (200, {"purged": 1})
    status, purged = await call("DELETE", url)
    assert (status, purged) == (200, {"purged": 1})
    assert await broker.dead_letters() == []


async def test_without_a_broker_the_api_says_it_is_not_set_up() -> None:
    app = FastAPI()
    problems.install(app)
    app.include_router(admin_dlq.router)
    app.dependency_overrides[admin_dlq.require_dlq_admin] = lambda: None
    async with serve_asgi(app) as server:
        status, body = await call("GET", f"{server.url}/admin/dead-letters")
    assert status == 500
    assert "broker is not set up" in body["detail"]


# -- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def broker_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'broker.db'}"

    async def seed() -> None:
        async with SqliteBroker.from_url(url, drain_timeout=1.0, poll_interval=0.05) as broker:
            await make_dead_letters(broker, 2)

    asyncio.run(seed())
    return url


def run(*args: str, env: dict[str, str] | None = None, answer: str | None = None) -> Any:
    environment = {"MEDIANEST_CONFIG": "", **(env or {})}
    return CliRunner().invoke(dlq.app, list(args), env=environment, input=answer)


async def letters(url: str) -> list[Any]:
    async with SqliteBroker.from_url(url) as broker:
        return await broker.dead_letters()


def test_the_cli_lists_shows_replays_and_purges(broker_url: str) -> None:
    listed = run("list", "--broker", broker_url)
    assert listed.exit_code == 0, listed.output
    assert "alpha.job" in listed.output
    assert "beta.job" in listed.output
    ids = [letter.id for letter in asyncio.run(letters(broker_url))]

    only = run("list", "--group", "second", env={"MEDIANEST_MESSAGING__URL": broker_url})
    assert only.exit_code == 0
    assert "beta.job" in only.output
    assert "alpha.job" not in only.output

    shown = run("show", ids[0], "--broker", broker_url)
    assert shown.exit_code == 0, shown.output
    assert "LookupError: no handler for 0" in shown.output
    assert '"x-n": "0"' in shown.output

    replayed = run("replay", ids[0], "--broker", broker_url)
    assert replayed.exit_code == 0, replayed.output
    assert "goes to group first again" in replayed.output
    assert [letter.id for letter in asyncio.run(letters(broker_url))] == ids[1:]

    unknown = run("show", ids[0], "--broker", broker_url)
    assert unknown.exit_code == 1
    assert run("replay", "nope", "--broker", broker_url).exit_code == 1

    refused = run("purge", "--broker", broker_url, answer="n\n")
    assert refused.exit_code == 1
    purged = run("purge", "--yes", "--broker", broker_url)
    assert purged.exit_code == 0, purged.output
    assert "Purged 1 dead letter." in purged.output
    assert "no dead letters" in run("list", "--broker", broker_url).output


def test_the_cli_refuses_a_bad_broker_url(tmp_path: Path) -> None:
    result = run("list", "--broker", "kafka://localhost")
    assert result.exit_code == 2
    assert "unknown messaging backend kafka://" in result.output
