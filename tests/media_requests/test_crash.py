"""The crash test: the hub is SIGKILLed with ``request-media`` sagas stopped at every step
boundary, in the middle of a step and in the middle of a compensation; once restarted it
must finish every saga (completed or compensated) and Overseerr must hold exactly one
request per completed saga: no orphan, no duplicate.

The hub runs as ``python -m medianest serve``; the simulators run in this process, so the
test sees what Overseerr holds and slows it with fault rules. Each saga requests its own
movie, and the test hooks of :mod:`medianest.media_requests.hooks` (keyed by TMDB id) park
each one at its point and drop a marker file; the two mid-step cases are caught in the
simulator's request log while Overseerr holds their call. Once every saga is parked, one
SIGKILL stops them all at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from medianest.database import Database
from medianest.events.backends.sql import SqlEventStore
from medianest.media_requests import hooks as saga_hooks
from medianest.sagas import load
from medianest.simulators import FaultRule, SimulatorApp
from tests.media_requests.support import (
    OWNER_TOKEN,
    SEED,
    bearer_sign_in,
    overseerr_requests,
    requestable_movies,
    send,
)
from tests.support.servers import free_port
from tests.support.stack import simulated_stack
from tests.support.waiting import until

SIZE = 200  # enough movies outside the library for one saga each
PARKED: list[list[str]] = [
    ["pause@reserve_quota:enter"],
    ["pause@reserve_quota:exit"],
    ["pause@create_in_overseerr:enter"],
    ["pause@create_in_overseerr:exit"],
    ["pause@record_request:enter"],
    ["pause@record_request:exit"],
    ["pause@publish_created:enter"],
    ["pause@publish_created:exit"],
]
"""Sagas parked at a step boundary: they end completed."""
COMPENSATING: list[list[str]] = [
    ["fail@publish_created:enter", "pause@record_request:undo-exit"],
    ["fail@publish_created:enter", "pause@create_in_overseerr:undo-enter"],
    ["fail@publish_created:enter", "pause@create_in_overseerr:undo-exit"],
    ["fail@record_request:exit", "pause@reserve_quota:undo-enter"],
]
"""Sagas parked in the middle of their compensation: they end compensated."""


@dataclass
class HubProcess:
    """``medianest serve`` in a child process, started again after each kill."""

    port: int
    env: dict[str, str]
    log: Path
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, http: aiohttp.ClientSession, **extra_env: str) -> None:
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "medianest",
                "serve",
                "--port",
                str(self.port),
                env={**self.env, **extra_env},
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )

        async def ready() -> bool:
            assert self.process is not None
            assert self.process.returncode is None, self.log.read_text()[-3000:]
            try:
                async with http.get(f"{self.url}/ready") as answer:
                    return answer.status == 200
            except aiohttp.ClientError:
                return False

        await until(ready, "the hub to be ready", deadline=60)

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        assert await self.process.wait() == -signal.SIGKILL

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


@pytest.fixture
async def hub_process(tmp_path: Path) -> AsyncIterator[tuple[HubProcess, Any]]:
    options = {"pin_claim_after": None, "request_available_after": None}
    async with simulated_stack(size=SIZE, seed=SEED, **options) as stack:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIANEST_")}
        env.update(
            MEDIANEST_DATA_DIR=str(tmp_path / "data"),
            MEDIANEST_UPSTREAMS=json.dumps(stack.upstreams),
            MEDIANEST_EVENTS__SAGA_LEASE_TTL="1.5",
            MEDIANEST_EVENTS__SAGA_RECOVERY_INTERVAL="0.3",
            MEDIANEST_LOG__LEVEL="warning",
        )
        hub = HubProcess(free_port(), env, tmp_path / "hub.log")
        try:
            yield hub, stack
        finally:
            await hub.stop()


def _recorded(
    overseerr: SimulatorApp[Any], check: Callable[[Any], bool]
) -> Callable[[], Awaitable[bool]]:
    async def seen() -> bool:
        return any(check(r) for r in list(overseerr.requests))

    return seen


async def test_every_saga_ends_completed_or_compensated_after_sigkill(
    tmp_path: Path, hub_process: tuple[HubProcess, Any]
) -> None:
    hub, stack = hub_process
    overseerr, plextv = stack.apps["overseerr"], stack.apps["plextv"]
    movies = requestable_movies(len(PARKED) + len(COMPENSATING) + 2, size=SIZE)
    parked, compensating = movies[: len(PARKED)], movies[len(PARKED) : -2]
    mid_lookup, mid_post = movies[-2:]
    hooks = {
        str(movie): points for movie, points in zip(movies, PARKED + COMPENSATING, strict=False)
    }
    markers = tmp_path / "markers"
    markers.mkdir()
    hook_env = json.dumps({"dir": str(markers), "hooks": hooks})
    sagas: dict[int, str] = {}

    async with aiohttp.ClientSession() as http:
        await hub.start(http, **{saga_hooks.ENV: hook_env})
        admin = await bearer_sign_in(http, hub.url, plextv, OWNER_TOKEN)

        async def request(movie: int) -> None:
            body = {"media_type": "movie", "tmdb_id": movie}
            status, accepted, _ = await send(
                http, "POST", f"{hub.url}/api/v1/requests", json=body, headers=admin
            )
            assert status == 202, accepted
            sagas[movie] = accepted["saga_id"]

        # Parked at boundaries and inside compensations, and one held in its lookup.
        overseerr.faults.add(
            FaultRule(kind="latency", route=f"/api/v1/movie/{mid_lookup}", latency=120)
        )
        for movie in [*parked, *compensating, mid_lookup]:
            await request(movie)
        expected = {f"{movie}@{points[-1].split('@')[1]}" for movie, points in hooks.items()}

        async def all_parked() -> bool:
            return expected <= {p.name for p in markers.iterdir()}

        await until(all_parked, "every saga to reach its point")
        await until(
            _recorded(overseerr, lambda r: r.path == f"/api/v1/movie/{mid_lookup}"),
            "the lookup to be held by Overseerr",
        )
        # One more, held in its POST (the only POST left to make, so the only one slowed).
        overseerr.faults.add(
            FaultRule(kind="latency", route="/api/v1/request", method="POST", latency=120)
        )
        await request(mid_post)
        await until(
            _recorded(
                overseerr,
                lambda r: (
                    r.method == "POST" and json.loads(r.body or b"{}").get("mediaId") == mid_post
                ),
            ),
            "the create to be held by Overseerr",
        )

        await hub.kill()
        overseerr.faults.clear()
        await hub.start(http)

        async def every_saga_over() -> bool:
            status, listed, _ = await send(
                http, "GET", f"{hub.url}/api/v1/admin/sagas?limit=1000", headers=admin
            )
            assert status == 200, listed
            states = {s["id"]: s["state"] for s in listed}
            return all(states.get(s) in ("completed", "compensated") for s in sagas.values())

        await until(every_saga_over, "every saga to end", deadline=60)
        _, listed, _ = await send(
            http, "GET", f"{hub.url}/api/v1/admin/sagas?limit=1000", headers=admin
        )
        states = {s["id"]: s["state"] for s in listed}
        completed = {m for m, s in sagas.items() if states[s] == "completed"}
        assert completed == {*parked, mid_lookup, mid_post}
        assert {m for m, s in sagas.items() if states[s] == "compensated"} == set(compensating)

        held = overseerr_requests(overseerr)
        assert set(held) == completed, "no orphan: Overseerr holds only completed sagas' requests"
        assert all(len(ids) == 1 for ids in held.values()), f"no duplicate: {held}"
        posts: dict[int, int] = {}
        for call in list(overseerr.requests):
            if call.method == "POST" and call.path == "/api/v1/request":
                movie = json.loads(call.body)["mediaId"]
                posts[movie] = posts.get(movie, 0) + 1
        assert posts[mid_post] == 2, "the create held when the hub died was made again"
        assert posts[parked[3]] == 1, "a create done before the crash was found, not redone"

        async def projected() -> bool:
            status, rows, _ = await send(
                http, "GET", f"{hub.url}/api/v1/requests?limit=200", headers=admin
            )
            assert status == 200, rows
            final = {r["tmdb_id"]: r for r in rows if r["status"] in ("approved", "failed")}
            return len(final) == len(sagas)

        await until(projected, "the read model to show every request")
        _, rows, _ = await send(http, "GET", f"{hub.url}/api/v1/requests?limit=200", headers=admin)
        by_movie = {r["tmdb_id"]: r for r in rows}
        for movie in completed:
            assert by_movie[movie]["status"] == "approved"
            assert by_movie[movie]["overseerr_id"] == str(held[movie][0])
        for movie in compensating:
            assert by_movie[movie]["status"] == "failed"

    in_doubt = {m: p[0].split("@")[1].split(":")[0] for m, p in zip(parked, PARKED, strict=True)}
    in_doubt.update({mid_lookup: "create_in_overseerr", mid_post: "create_in_overseerr"})
    await _check_streams(tmp_path, sagas, completed, set(compensating), in_doubt)


async def _check_streams(
    tmp_path: Path,
    sagas: dict[int, str],
    completed: set[int],
    compensated: set[int],
    in_doubt: dict[int, str],
) -> None:
    """The kills happened where planned (the step a saga was stopped in ran twice), each
    completed request recorded its events once, and each quota place was taken once and
    given back exactly for the compensated sagas."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'medianest.db'}"
    async with Database(url) as db, SqlEventStore(db) as store:
        for movie, step in in_doubt.items():
            record = await load(store, sagas[movie])
            attempts = {s.name: s.attempts for s in record.steps}
            assert attempts[step] == 2, (movie, step, attempts)
        for movie, saga_id in sagas.items():
            request_id = saga_id.removeprefix("request-media-")
            types = [e.type for e in await store.read_stream(f"request-{request_id}")]
            if movie in completed:
                assert types == [
                    "MediaRequested",
                    "RequestSubmitted",
                    "RequestApproved",
                    "RequestCreated",
                ], (movie, types)
        first = await store.read_stream(f"saga-{next(iter(sagas.values()))}")
        user = first[0].data["input"]["user_id"]  # every saga was started by the admin
        quota_events = await store.read_stream(f"quota-{user}")
        reserved = [e.data["key"] for e in quota_events if e.type == "QuotaReserved"]
        released = [e.data["key"] for e in quota_events if e.type == "QuotaReleased"]
        assert sorted(reserved) == sorted(f"{s}:reserve_quota" for s in sagas.values())
        assert sorted(released) == sorted(f"{sagas[m]}:reserve_quota" for m in compensated)
