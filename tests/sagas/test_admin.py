"""Sagas through the admin API (``/admin/sagas``) and ``medianest sagas list|show|retry``."""

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
from medianest.api.v1 import admin_sagas
from medianest.cli import sagas as sagas_cli
from medianest.database import Database, upgrade
from medianest.events.backends.memory import MemoryEventStore
from medianest.events.backends.sql import SqlEventStore
from medianest.sagas import SagaOrchestrator, SagaState
from medianest.security.roles import ADMIN, Principal, Role
from tests.sagas.ledger import Ledger
from tests.support.servers import serve_asgi


async def failed_saga(sagas: SagaOrchestrator, ledger: Ledger, saga_id: str) -> None:
    """Start a saga whose step b fails for good and whose step a cannot be undone."""
    ledger.failures["b"] = 1
    ledger.errors["b"] = ValueError
    ledger.undo_failing.add("a")
    record = await sagas.start("order", saga_id, {"movie": 603})
    assert record.state is SagaState.COMPENSATION_FAILED


# -- the admin API ---------------------------------------------------------------------------


@pytest.fixture
async def api() -> AsyncIterator[tuple[str, SagaOrchestrator, Ledger]]:
    ledger = Ledger()
    async with MemoryEventStore() as store:
        sagas = SagaOrchestrator(store, [ledger.definition()], owner="hub")
        app = FastAPI()
        problems.install(app)
        v1 = APIRouter(prefix="/api/v1")
        v1.include_router(admin_sagas.router)
        app.include_router(v1)
        app.state.event_store = store
        app.state.sagas = sagas
        admin = Principal(
            kind="user", id="u1", name="admin", role=Role.ADMIN, scopes=frozenset({ADMIN})
        )
        app.dependency_overrides[admin_sagas.require_sagas_admin] = lambda: admin
        async with serve_asgi(app) as server:
            yield f"{server.url}/api/v1/admin/sagas", sagas, ledger
        await sagas.close()


async def call(method: str, url: str, **options: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(method, url, **options) as answer:
        return answer.status, await answer.json(content_type=None)


async def test_the_api_lists_shows_and_retries(
    api: tuple[str, SagaOrchestrator, Ledger],
) -> None:
    url, sagas, ledger = api
    await sagas.start("order", "fine")
    await failed_saga(sagas, ledger, "stuck")

    status, listed = await call("GET", url, params={"state": "compensation_failed"})
    assert status == 200
    assert [(s["id"], s["state"], s["step"], s["error"]) for s in listed] == [
        ("stuck", "compensation_failed", "a", "RuntimeError: cannot undo a")
    ]
    status, everything = await call("GET", url)
    assert sorted(s["id"] for s in everything) == ["fine", "stuck"]
    status, _ = await call("GET", url, params={"state": "sleeping"})
    assert status == 422

    status, shown = await call("GET", f"{url}/stuck")
    assert status == 200
    assert (shown["state"], shown["failed_step"], shown["input"]) == (
        "compensation_failed",
        "a",
        {"movie": 603},
    )
    assert [(s["name"], s["status"]) for s in shown["steps"]] == [
        ("a", "completed"),
        ("b", "compensated"),
        ("c", "pending"),
    ]
    assert shown["steps"][0]["compensation_error"] == "RuntimeError: cannot undo a"
    assert shown["history"][0]["type"] == "SagaStarted"
    status, missing = await call("GET", f"{url}/nope")
    assert status == 404
    assert missing["type"].endswith("/not-found")

    status, refused = await call("POST", f"{url}/fine/retry")
    assert status == 422
    assert "only a compensation_failed saga" in refused["detail"]

    ledger.undo_failing.clear()
    status, retried = await call("POST", f"{url}/stuck/retry")
    assert status == 202
    assert retried["state"] == "compensating"
    assert retried["history"][-1]["data"] == {"by": "user:u1"}
    await ledger.wait_for(lambda: ledger.undone["stuck:a"] == 1)
    async with asyncio.timeout(20):
        while (await sagas.show("stuck")).state is not SagaState.COMPENSATED:
            await asyncio.sleep(0.02)


async def test_without_an_event_store_the_api_says_it_is_not_set_up() -> None:
    app = FastAPI()
    problems.install(app)
    app.include_router(admin_sagas.router)
    app.dependency_overrides[admin_sagas.require_sagas_admin] = lambda: None
    async with serve_asgi(app) as server:
        status, body = await call("GET", f"{server.url}/admin/sagas")
    assert status == 500
    assert "event store is not set up" in body["detail"]


# -- the CLI ---------------------------------------------------------------------------------


def run(*args: str) -> Any:
    return CliRunner().invoke(
        sagas_cli.app, list(args), env={"MEDIANEST_CONFIG": "", "COLUMNS": "200"}
    )


def test_the_cli_lists_shows_and_requests_a_retry(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    ledger = Ledger()

    async def seed() -> None:
        async with Database(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}") as db:
            await upgrade(db)
            async with SqlEventStore(db) as store:
                sagas = SagaOrchestrator(store, [ledger.definition()])
                await sagas.start("order", "fine")
                await failed_saga(sagas, ledger, "stuck")

    asyncio.run(seed())

    listed = run("list", "--events", url)
    assert listed.exit_code == 0, listed.output
    assert "stuck" in listed.output
    assert "compensation_failed" in listed.output
    assert "RuntimeError: cannot undo a" in listed.output
    only = run("list", "--state", "completed", "--events", url)
    assert "fine" in only.output
    assert "stuck" not in only.output

    shown = run("show", "stuck", "--events", url)
    assert shown.exit_code == 0, shown.output
    assert "state:    compensation_failed" in shown.output
    assert "RuntimeError: cannot undo a (step a)" in shown.output
    assert "CompensationFailed" in shown.output
    assert run("show", "nope", "--events", url).exit_code == 1

    refused = run("retry", "fine", "--events", url)
    assert refused.exit_code == 1
    assert "only a compensation_failed saga" in refused.output
    retried = run("retry", "stuck", "--events", url)
    assert retried.exit_code == 0, retried.output
    assert "compensating again" in retried.output

    async def workers_recover() -> SagaState:
        ledger.undo_failing.clear()
        async with SqlEventStore.from_url(url) as store:
            sagas = SagaOrchestrator(store, [ledger.definition()])
            assert await sagas.recover() == ["stuck"]
            return (await sagas.show("stuck")).state

    assert asyncio.run(workers_recover()) is SagaState.COMPENSATED
    assert "compensated" in run("list", "--events", url).output


def test_the_cli_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    result = run("list", "--events", f"sqlite:///{tmp_path / 'empty.db'}")
    assert result.exit_code == 1
    assert "not migrated" in result.output
