"""The ``request-media`` saga through the API, over real sockets, against the simulators:
the happy path, quota, compensation after a later step fails, visibility, bad input."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from medianest.app import Hub, create_app
from medianest.config import load_settings
from medianest.config.requests import RequestsSettings
from medianest.events.backends.sql_store import load_checkpoint
from medianest.media_requests import hooks as saga_hooks
from medianest.media_requests.projection import NAME as PROJECTION
from medianest.messaging import Message
from medianest.sagas import SagaState
from medianest.sagas.records import stream_of
from medianest.simulators.data import Catalogue
from tests.media_requests.support import (
    FRIEND_TOKEN,
    OWNER_TOKEN,
    SEED,
    SIZE,
    bearer_sign_in,
    overseerr_requests,
    requestable_movies,
    send,
)
from tests.support.servers import serve_asgi
from tests.support.stack import SimulatedStack, simulated_stack
from tests.support.waiting import until


@dataclass
class Running:
    url: str
    hub: Hub
    stack: SimulatedStack
    http: aiohttp.ClientSession
    admin: dict[str, str]
    friend: dict[str, str]

    @property
    def overseerr(self) -> Any:
        return self.stack.apps["overseerr"]

    async def request(self, who: dict[str, str], body: dict[str, Any]) -> tuple[int, Any]:
        status, answer, response = await send(
            self.http, "POST", f"{self.url}/api/v1/requests", json=body, headers=who
        )
        if status == 202:
            assert response.headers["Location"] == f"/api/v1/requests/{answer['request_id']}"
        return status, answer

    async def get(self, who: dict[str, str], path: str = "") -> tuple[int, Any]:
        status, body, _ = await send(
            self.http, "GET", f"{self.url}/api/v1/requests{path}", headers=who
        )
        return status, body

    async def projected(self, saga_id: str) -> bool:
        """Whether the read model has applied the last event of saga ``saga_id`` (it follows
        the store: a saga may end a moment before its read model shows it)."""
        store = self.hub.event_store
        assert store is not None
        last = await store.read_stream(stream_of(saga_id), backwards=True, limit=1)
        async with self.hub.database.connect() as conn:
            checkpoint = await load_checkpoint(conn, PROJECTION)
        return bool(last) and checkpoint >= last[0].position

    async def settled(self, who: dict[str, str], request_id: str) -> dict[str, Any]:
        """The request once its saga is over and the projection has caught up with it."""
        found: dict[str, Any] = {}

        async def done() -> bool:
            status, body = await self.get(who, f"/{request_id}")
            assert status == 200, body
            found.update(body)
            if body["status"] not in ("approved", "failed"):
                return False
            assert self.hub.sagas is not None
            if (await self.hub.sagas.show(body["saga_id"])).state.incomplete:
                return False
            return await self.projected(body["saga_id"])

        await until(done, f"request {request_id} to settle")
        return found


@contextlib.asynccontextmanager
async def running_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, quota: int = 10, hooks: Any = None
) -> AsyncIterator[Running]:
    monkeypatch.setattr(
        "medianest.media_requests.wiring.requests_settings",
        lambda _: RequestsSettings(quota_per_week=quota),
    )
    if hooks is not None:
        monkeypatch.setenv(saga_hooks.ENV, json.dumps({"dir": str(tmp_path), "hooks": hooks}))
    options = {"pin_claim_after": None, "request_available_after": None}
    async with simulated_stack(size=SIZE, seed=SEED, **options) as stack:
        settings = load_settings(
            overrides={"data_dir": str(tmp_path / "data"), "upstreams": stack.upstreams}
        )
        hub = Hub(settings, simulated=True)
        async with (
            serve_asgi(create_app(settings, hub=hub, configure_logs=False)) as server,
            aiohttp.ClientSession() as http,
        ):
            admin = await bearer_sign_in(http, server.url, stack.apps["plextv"], OWNER_TOKEN)
            friend = await bearer_sign_in(http, server.url, stack.apps["plextv"], FRIEND_TOKEN)
            yield Running(server.url, hub, stack, http, admin, friend)


async def test_a_request_is_made_once_recorded_and_announced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_hub(tmp_path, monkeypatch) as api:
        assert api.hub.broker is not None
        announced: asyncio.Queue[Message] = asyncio.Queue()
        subscription = await api.hub.broker.subscribe(
            "request.created", "test-announcements", announced.put
        )
        try:
            [movie] = requestable_movies(1)
            status, accepted = await api.request(
                api.friend, {"media_type": "movie", "tmdb_id": movie}
            )
            assert status == 202, accepted
            assert accepted["status"] == "pending"
            request_id, saga_id = accepted["request_id"], accepted["saga_id"]
            status, early = await api.get(api.friend, f"/{request_id}")
            assert status == 200, "readable at once, even before the projection has it"
            assert early["id"] == request_id

            found = await api.settled(api.friend, request_id)
            held = overseerr_requests(api.overseerr)
            assert held == {movie: [int(found["overseerr_id"])]}, "exactly one Overseerr request"
            assert found["status"] == "approved"  # the API key's user is an Overseerr admin
            assert found["title"]
            assert found["saga_id"] == saga_id
            assert found["reason"] is None

            status, mine = await api.get(api.friend)
            assert status == 200
            assert [r["id"] for r in mine] == [request_id]
            assert (await api.hub.sagas.show(saga_id)).state is SagaState.COMPLETED  # type: ignore[union-attr]

            message = await asyncio.wait_for(announced.get(), 20)
            assert message.payload["type"] == "RequestCreated"
            data = message.payload["data"]
            assert (data["request_id"], data["tmdb_id"], data["saga_id"]) == (
                request_id,
                movie,
                saga_id,
            )
            assert data["overseerr_id"] == int(found["overseerr_id"])
        finally:
            await subscription.close()


async def test_a_title_requested_twice_is_one_overseerr_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_hub(tmp_path, monkeypatch) as api:
        [movie] = requestable_movies(1)
        _, first = await api.request(api.friend, {"media_type": "movie", "tmdb_id": movie})
        made = await api.settled(api.friend, first["request_id"])
        _, second = await api.request(api.admin, {"media_type": "movie", "tmdb_id": movie})
        adopted = await api.settled(api.admin, second["request_id"])
        assert adopted["status"] == "approved"
        assert adopted["overseerr_id"] == made["overseerr_id"]
        assert overseerr_requests(api.overseerr) == {movie: [int(made["overseerr_id"])]}
        posts = [r for r in api.overseerr.requests if r.method == "POST"]
        assert len(posts) == 1, "the second saga found the request and made none"

        show = next(t for t in _shows() if t[1] >= 2)[0]
        body = {"media_type": "tv", "tmdb_id": show, "seasons": [2, 1, 2]}
        _, tv = await api.request(api.friend, body)
        found = await api.settled(api.friend, tv["request_id"])
        assert (found["status"], found["seasons"]) == ("approved", [1, 2])
        held = api.overseerr.state.requests[int(found["overseerr_id"])]
        assert held.seasons == [1, 2]


def _shows() -> list[tuple[int, int]]:
    """(TMDB id, season count) of the shows outside the simulated library."""
    catalogue = Catalogue(SEED, SIZE)
    titles = [catalogue.title(uid) for uid in range(catalogue.size, catalogue.universe)]
    return [(t.tmdb_id, t.tmdb_season_count) for t in titles if t.kind == "show"]


async def test_over_quota_the_saga_compensates_and_overseerr_is_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_hub(tmp_path, monkeypatch, quota=1) as api:
        first, second = requestable_movies(2)
        _, made = await api.request(api.friend, {"media_type": "movie", "tmdb_id": first})
        assert (await api.settled(api.friend, made["request_id"]))["status"] == "approved"

        _, refused = await api.request(api.friend, {"media_type": "movie", "tmdb_id": second})
        found = await api.settled(api.friend, refused["request_id"])
        assert found["status"] == "failed"
        assert "quota" in found["reason"]
        assert found["overseerr_id"] is None
        assert set(overseerr_requests(api.overseerr)) == {first}

        _, exempt = await api.request(api.admin, {"media_type": "movie", "tmdb_id": second})
        assert (await api.settled(api.admin, exempt["request_id"]))["status"] == "approved"


async def test_a_failure_after_the_create_deletes_the_overseerr_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doomed, later = requestable_movies(2)
    hooks = {str(doomed): ["fail@publish_created:enter"]}
    async with running_hub(tmp_path, monkeypatch, quota=1, hooks=hooks) as api:
        _, accepted = await api.request(api.friend, {"media_type": "movie", "tmdb_id": doomed})
        found = await api.settled(api.friend, accepted["request_id"])
        assert found["status"] == "failed"
        assert "test hook" in found["reason"]
        assert overseerr_requests(api.overseerr) == {}, "the compensation deleted it"
        deleted = [r for r in api.overseerr.requests if r.method == "DELETE"]
        assert len(deleted) == 1
        record = await api.hub.sagas.show(accepted["saga_id"])  # type: ignore[union-attr]
        assert record.state is SagaState.COMPENSATED
        assert [s.status for s in record.steps] == ["compensated"] * 4

        # The quota place was given back: the one request allowed this week still is.
        _, next_one = await api.request(api.friend, {"media_type": "movie", "tmdb_id": later})
        assert (await api.settled(api.friend, next_one["request_id"]))["status"] == "approved"


async def test_people_see_their_own_requests_and_admins_see_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_hub(tmp_path, monkeypatch) as api:
        status, issued, _ = await send(
            api.http,
            "POST",
            f"{api.url}/api/v1/admin/keys",
            json={"name": "other", "owner": "someone-else", "scopes": ["requests:read"]},
            headers=api.admin,
        )
        assert status == 201, issued
        stranger = {"X-Api-Key": issued["key"]}
        [movie] = requestable_movies(1)
        _, accepted = await api.request(api.friend, {"media_type": "movie", "tmdb_id": movie})
        request_id = accepted["request_id"]
        await api.settled(api.friend, request_id)

        status, body = await api.get(stranger, f"/{request_id}")
        assert status == 404, "another person's request does not exist, for them"
        assert body["type"] == "/problems/not-found"
        assert (await api.get(stranger)) == (200, [])
        status, seen = await api.get(api.admin, f"/{request_id}")
        assert status == 200
        assert seen["id"] == request_id
        status, every = await api.get(api.admin, "?status=approved")
        assert status == 200
        assert [r["id"] for r in every] == [request_id]
        assert (await api.get(api.admin, "?status=failed")) == (200, [])

        status, _ = await api.request(stranger, {"media_type": "movie", "tmdb_id": movie})
        assert status == 403, "requests:write is needed to make one"
        status, _, _ = await send(api.http, "GET", f"{api.url}/api/v1/requests")
        assert status == 401


BAD_BODIES: list[dict[str, Any]] = [
    {"media_type": "book", "tmdb_id": 603},
    {"media_type": "movie", "tmdb_id": 0},
    {"media_type": "movie", "tmdb_id": "603x"},
    {"media_type": "movie", "tmdb_id": 603, "seasons": [1]},
    {"media_type": "tv", "tmdb_id": 603, "seasons": [0]},
    {"media_type": "movie", "tmdb_id": 603, "user_id": "someone-else"},
    {"tmdb_id": 603},
]


async def test_bad_input_is_a_422_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_hub(tmp_path, monkeypatch) as api:
        for body in BAD_BODIES:
            status, problem = await api.request(api.friend, body)
            assert status == 422, (body, problem)
            assert problem["type"] == "/problems/validation"
        assert (await api.get(api.admin)) == (200, [])
        assert (await api.hub.sagas.list()) == []  # type: ignore[union-attr]
        assert overseerr_requests(api.overseerr) == {}
