"""The plex.tv adapter against the plex.tv simulator (and the Plex one it points at)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from medianest import errors
from medianest.integrations.models import HealthStatus
from medianest.integrations.plextv import PlexTvAdapter
from medianest.simulators import ManualClock
from tests.integrations.conftest import IDENTIFICATION, PLEX_CLIENT_ID, PlexServed

OWNER_TOKEN = "plex-owner-token"
FRIEND_TOKEN = "plex-friend-token"
FRIEND_SERVER_TOKEN = "plex-friend-server-token"

Serve = Callable[..., Awaitable[PlexServed]]
Make = Callable[..., Awaitable[Any]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def plex(plex_serve: Serve) -> PlexServed:
    return await plex_serve("plex", size=20)


@pytest.fixture
async def plextv(plex_serve: Serve, plex: PlexServed, clock: ManualClock) -> PlexServed:
    return await plex_serve("plextv", size=20, plex_url=plex.url, clock=clock)


@pytest.fixture
async def tv(plextv: PlexServed, plex_adapter: Make) -> PlexTvAdapter:
    made = await plex_adapter("plextv", plextv.url)
    assert isinstance(made, PlexTvAdapter)
    return made


async def test_pin_sign_in_to_a_usable_server(
    plextv: PlexServed, plex: PlexServed, tv: PlexTvAdapter, plex_adapter: Make
) -> None:
    pin = await tv.create_pin()
    created = plextv.sim.requests[-1]
    assert (created.method, created.path, created.query_string) == (
        "POST",
        "/api/v2/pins",
        "strong=true",
    )
    assert len(pin.code) == 25
    assert pin.client_identifier == PLEX_CLIENT_ID
    assert pin.auth_token is None
    assert not pin.claimed
    assert pin.expires_at is not None

    polls = [await tv.poll_pin(pin.id) for _ in range(3)]  # claimed on the third poll
    assert [p.claimed for p in polls] == [False, False, True]
    token = polls[-1].auth_token
    assert token is not None
    assert token.get_secret_value() == OWNER_TOKEN

    account = await tv.user(token.get_secret_value())
    assert (account.id, account.username, account.email) == (1001, "owner", "owner@example.com")
    assert account.subscription_active
    assert account.auth_token.get_secret_value() == OWNER_TOKEN

    servers = await tv.resources(token.get_secret_value())
    assert len(servers) == 1  # the web client the account also has is not a server
    server = servers[0]
    assert server.client_identifier == plex.sim.state.machine_identifier
    assert server.owned
    assert server.access_token is not None
    assert [(c.local, c.relay) for c in server.connections] == [
        (True, False),
        (False, False),
        (False, True),
    ]
    assert server.connections[0].uri == plex.url

    pms = await plex_adapter(
        "plex", server.connections[0].uri, token=server.access_token.get_secret_value()
    )
    assert (await pms.identity()).machine_identifier == server.client_identifier
    assert [s.key for s in await pms.libraries()] == ["1", "2", "3"]


async def test_a_shared_server_comes_with_its_own_token(
    plex_serve: Serve, plex: PlexServed, plex_adapter: Make
) -> None:
    plextv = await plex_serve(
        "plextv", size=20, plex_url=plex.url, pin_token=FRIEND_TOKEN, pin_claim_after=0
    )
    tv = await plex_adapter("plextv", plextv.url)
    pin = await tv.poll_pin((await tv.create_pin()).id)
    assert pin.auth_token is not None
    token = pin.auth_token.get_secret_value()
    assert (await tv.user(token)).username == "friend"
    (server,) = await tv.resources(token)
    assert not server.owned
    assert server.source_title == "owner"
    assert server.owner_id == 1001
    assert server.access_token is not None
    assert server.access_token.get_secret_value() == FRIEND_SERVER_TOKEN != token

    with_account_token = await plex_adapter("plex", plex.url, token=token)
    with pytest.raises(errors.UpstreamAuthError):
        await with_account_token.libraries()
    with_server_token = await plex_adapter("plex", plex.url, token=FRIEND_SERVER_TOKEN)
    assert len(await with_server_token.libraries()) == 3


async def test_an_expired_pin_is_not_found(
    plex_serve: Serve, plex_adapter: Make, clock: ManualClock
) -> None:
    plextv = await plex_serve("plextv", clock=clock, pin_claim_after=None)
    tv = await plex_adapter("plextv", plextv.url)
    pin = await tv.create_pin()
    assert pin.expires_in == 1800
    clock.advance(1799)
    assert not (await tv.poll_pin(pin.id)).claimed
    clock.advance(1)
    with pytest.raises(errors.UpstreamNotFound, match=f"PIN {pin.id} expired") as caught:
        await tv.poll_pin(pin.id)
    assert caught.value.status == 404

    short = await tv.create_pin(strong=False)
    assert len(short.code) == 4
    assert short.expires_in == 900
    assert plextv.sim.requests[-1].query_string == "strong=false"


async def test_plextv_refuses_a_client_that_does_not_identify_itself(
    plextv: PlexServed, tv: PlexTvAdapter, plex_adapter: Make
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{plextv.url}/api/v2/pins?strong=true",
            headers={"Accept": "application/json", "X-Plex-Product": "MediaNest"},
        ) as response,
    ):
        assert response.status == 400
        body = await response.json()
    assert body["errors"][0]["code"] == 1000
    assert "X-Plex-Client-Identifier" in body["errors"][0]["message"]

    await tv.create_pin()
    assert plextv.sim.requests[-1].header("X-Plex-Client-Identifier") == PLEX_CLIENT_ID
    with pytest.raises(errors.ConfigurationError, match="client identifier"):
        await plex_adapter("plextv", plextv.url, client_identifier=" ")


async def test_a_refused_token_is_an_auth_error(tv: PlexTvAdapter) -> None:
    with pytest.raises(errors.UpstreamAuthError, match="refused the token") as caught:
        await tv.user("not-a-token")
    assert caught.value.status == 401
    with pytest.raises(errors.UpstreamAuthError):
        await tv.resources("not-a-token")
    with pytest.raises(errors.ValidationError):
        await tv.user("")


async def test_every_request_identifies_the_hub_and_matches_the_spec(
    plextv: PlexServed, tv: PlexTvAdapter
) -> None:
    from tests.simulators.spec import PLEX_LEGACY_SPEC, Contract

    pin = await tv.create_pin()
    await tv.poll_pin(pin.id)
    await tv.user(OWNER_TOKEN)
    await tv.resources(OWNER_TOKEN)
    assert len(plextv.sim.requests) == 4
    contract = Contract([PLEX_LEGACY_SPEC])
    for request in plextv.sim.requests:
        assert request.header("Accept") == "application/json"
        for name in IDENTIFICATION:
            assert request.header(name), f"{name} missing from {request.target}"
        expected_token = (
            OWNER_TOKEN if request.path in ("/api/v2/user", "/api/v2/resources") else None
        )
        assert request.header("X-Plex-Token") == expected_token
        contract.validate_recorded(request, base_url="https://plex.tv")
    resources = plextv.sim.requests[-1]
    assert resources.query_string == "includeHttps=1&includeRelay=1&includeIPv6=1"


async def test_auth_url_puts_the_parameters_in_the_fragment(tv: PlexTvAdapter) -> None:
    from medianest.integrations.plex_models import PlexPin

    pin = PlexPin(id=1, code="abc123", client_identifier="hub-1")
    assert tv.auth_url(pin) == (
        "https://app.plex.tv/auth#?clientID=hub-1&code=abc123"
        "&context%5Bdevice%5D%5Bproduct%5D=MediaNest"
    )
    assert tv.auth_url(pin, forward_url="https://hub.example/login/done?x=1") == (
        "https://app.plex.tv/auth#?clientID=hub-1&code=abc123"
        "&context%5Bdevice%5D%5Bproduct%5D=MediaNest"
        "&forwardUrl=https%3A%2F%2Fhub.example%2Flogin%2Fdone%3Fx%3D1"
    )


async def test_tokens_stay_out_of_reprs_and_dumps(tv: PlexTvAdapter) -> None:
    pin = await tv.create_pin()
    for _ in range(3):
        pin = await tv.poll_pin(pin.id)
    account = await tv.user(OWNER_TOKEN)
    servers = await tv.resources(OWNER_TOKEN)
    for thing in (pin, account, *servers, tv):
        for text in (repr(thing), str(thing)):
            assert OWNER_TOKEN not in text
    for model in (pin, account, *servers):
        assert OWNER_TOKEN not in model.model_dump_json()


def odd_plextv_app() -> Starlette:
    def connection(uri: str, *, local: Any, relay: Any, port: Any = 32400) -> dict[str, Any]:
        return {"uri": uri, "protocol": "https", "port": port, "local": local, "relay": relay}

    devices = [
        {"name": "Phone", "clientIdentifier": "phone", "provides": "client,player"},
        {
            "name": "NAS",
            "clientIdentifier": "nas",
            "provides": "server,player",
            "owned": 1,
            "ownerId": "7",
            "accessToken": "nas-token",
            "connections": [
                connection("https://relay", local=False, relay=True),
                connection("https://remote", local=0, relay=0, port="443"),
                connection("http://lan", local="1", relay=False),
                connection("https://remote-2", local=False, relay=False),
            ],
        },
        {"name": "Old box", "clientIdentifier": 12345, "provides": "server"},
    ]

    async def resources(_: Request) -> Response:
        return JSONResponse(devices)

    async def pin_without_code(_: Request) -> Response:
        return JSONResponse({"id": 5, "clientIdentifier": "x"}, status_code=201)

    async def user_as_list(_: Request) -> Response:
        return JSONResponse([])

    async def pin_as_xml(_: Request) -> Response:
        return Response("<pin id='5'/>", media_type="application/xml")

    return Starlette(
        routes=[
            Route("/api/v2/resources", resources),
            Route("/api/v2/pins", pin_without_code, methods=["POST"]),
            Route("/api/v2/pins/{pin_id}", pin_as_xml),
            Route("/api/v2/user", user_as_list),
        ]
    )


async def test_servers_only_with_connections_best_first(
    plex_serve: Serve, plex_adapter: Make
) -> None:
    odd = await plex_serve(odd_plextv_app())
    tv = await plex_adapter("plextv", odd.url + "/api/v2")
    nas, old = await tv.resources("token")
    assert [c.uri for c in nas.connections] == [
        "http://lan",
        "https://remote",
        "https://remote-2",
        "https://relay",
    ]
    assert nas.owned
    assert nas.owner_id == 7
    assert nas.connections[1].port == 443
    assert nas.access_token is not None
    assert nas.access_token.get_secret_value() == "nas-token"
    assert (old.client_identifier, old.access_token, old.connections) == ("12345", None, [])


async def test_contract_violations_name_what_is_missing(
    plex_serve: Serve, plex_adapter: Make
) -> None:
    odd = await plex_serve(odd_plextv_app())
    tv = await plex_adapter("plextv", odd.url)
    cases: list[tuple[Callable[[], Awaitable[Any]], str]] = [
        (tv.create_pin, "PIN 5 has no code"),
        (lambda: tv.user("token"), "user is a JSON list, not an object"),
        (lambda: tv.poll_pin(5), "not JSON"),
    ]
    for call, message in cases:
        with pytest.raises(errors.UpstreamContractError, match=message) as caught:
            await call()
        assert caught.value.service == "plextv"


async def test_health(plextv: PlexServed, plex_adapter: Make) -> None:
    anonymous = await plex_adapter("plextv", plextv.url)
    assert (await anonymous.health()).status is HealthStatus.UP
    with_token = await plex_adapter("plextv", plextv.url, token=OWNER_TOKEN)
    assert (await with_token.health()).status is HealthStatus.UP
    assert plextv.sim.requests[-1].header("X-Plex-Token") == OWNER_TOKEN
    stale = await plex_adapter("plextv", plextv.url, token="revoked")
    assert (await stale.health()).status is HealthStatus.DEGRADED
