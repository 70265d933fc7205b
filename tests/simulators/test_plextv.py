"""The plex.tv simulator against NOTES.md section 2 and the legacy spec's plex.tv paths."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import aiohttp
import pytest

from medianest.simulators import ManualClock
from tests.simulators.conftest import running
from tests.simulators.spec import Contract

CLIENT = {
    "Accept": "application/json",
    "X-Plex-Client-Identifier": "medianest-test-client",
    "X-Plex-Product": "MediaNest",
    "X-Plex-Version": "0.1.0",
}


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    contract: Contract | None = None,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Any:
    async with http.request(method, url, headers={**CLIENT, **(headers or {})}) as response:
        assert response.status == status, await response.text()
        if contract is not None:
            return await contract.check(response)
        return await response.json()


async def test_pin_lifecycle(http: aiohttp.ClientSession, plextv_contract: Contract) -> None:
    clock = ManualClock()
    async with running("plextv", pin_claim_after=2, pin_lifetime=120, clock=clock) as tv:
        pin = await call(
            http, "POST", f"{tv.url}/api/v2/pins?strong=true", plextv_contract, status=201
        )
        assert len(pin["code"]) == 25
        assert pin["authToken"] is None
        assert pin["expiresIn"] == 120
        assert pin["product"] == "MediaNest"
        assert pin["createdAt"].endswith("Z")
        assert pin["expiresAt"].endswith("Z")
        poll = f"{tv.url}/api/v2/pins/{pin['id']}"
        first = await call(http, "GET", poll, plextv_contract)
        clock.advance(30)
        second = await call(http, "GET", poll, plextv_contract)
        third = await call(http, "GET", poll, plextv_contract)
        assert first["authToken"] is None
        assert second["authToken"] is None
        assert third["authToken"] == "plex-owner-token"
        assert third["expiresIn"] == 90
        assert third["code"] == pin["code"]
        clock.advance(90)
        expired = await call(http, "GET", poll, plextv_contract, status=404)
    assert expired == {
        "errors": [{"code": 1020, "message": "Code not found or expired", "status": 404}]
    }


async def test_short_pin_and_manual_claim(
    http: aiohttp.ClientSession, plextv_contract: Contract
) -> None:
    async with running("plextv", pin_claim_after=None) as tv:
        pin = await call(http, "POST", f"{tv.url}/api/v2/pins", plextv_contract, status=201)
        assert len(pin["code"]) == 4
        assert pin["expiresIn"] == 900
        for _ in range(3):
            polled = await call(http, "GET", f"{tv.url}/api/v2/pins/{pin['id']}")
            assert polled["authToken"] is None
        tv.state.claim(pin["id"], "plex-friend-token")
        polled = await call(http, "GET", f"{tv.url}/api/v2/pins/{pin['id']}", plextv_contract)
    assert polled["authToken"] == "plex-friend-token"


async def test_client_identifier_and_product_are_required(
    http: aiohttp.ClientSession, plextv_contract: Contract
) -> None:
    missing = {"code": 1000, "message": "X-Plex-Client-Identifier is missing", "status": 400}
    async with running("plextv") as tv:
        async with http.post(f"{tv.url}/api/v2/pins", headers={"Accept": "application/json"}) as r:
            assert r.status == 400
            assert await plextv_contract.check(r) == {"errors": [missing]}
        no_product = {k: v for k, v in CLIENT.items() if k != "X-Plex-Product"}
        async with http.post(f"{tv.url}/api/v2/pins", headers=no_product) as r:
            assert r.status == 400
            assert (await r.json())["errors"][0]["message"] == "X-Plex-Product is missing"
        async with http.get(f"{tv.url}/api/v2/user", headers={"Accept": "application/json"}) as r:
            assert r.status == 400
        pin = await call(http, "POST", f"{tv.url}/api/v2/pins", status=201)
        other = {"X-Plex-Client-Identifier": "someone-else"}
        await call(http, "GET", f"{tv.url}/api/v2/pins/{pin['id']}", status=404, headers=other)


async def test_user_validates_tokens(
    http: aiohttp.ClientSession, plextv_contract: Contract
) -> None:
    async with running("plextv") as tv:
        user = await call(
            http,
            "GET",
            f"{tv.url}/api/v2/user",
            plextv_contract,
            headers={"X-Plex-Token": "plex-owner-token"},
        )
        bad = await call(
            http,
            "GET",
            f"{tv.url}/api/v2/user",
            plextv_contract,
            status=401,
            headers={"X-Plex-Token": "nope"},
        )
    assert user["username"] == "owner"
    assert user["authToken"] == "plex-owner-token"
    assert isinstance(user["id"], int)
    assert user["subscription"]["active"] is True
    assert bad == {
        "errors": [{"code": 1001, "message": "User could not be authenticated", "status": 401}]
    }


async def _resources(
    http: aiohttp.ClientSession, url: str, token: str, contract: Contract
) -> list[dict[str, Any]]:
    target = f"{url}/api/v2/resources?includeHttps=1&includeRelay=1&includeIPv6=1"
    result: list[dict[str, Any]] = await call(
        http, "GET", target, contract, headers={"X-Plex-Token": token}
    )
    return result


async def test_resources_point_at_the_plex_simulator(
    http: aiohttp.ClientSession, plextv_contract: Contract
) -> None:
    async with running("plex", size=20) as plex:
        options = {"plex_url": plex.url, "size": 20}
        async with running("plextv", **options) as tv:
            owned = await _resources(http, tv.url, "plex-owner-token", plextv_contract)
            shared = await _resources(http, tv.url, "plex-friend-token", plextv_contract)
            outsider = await _resources(http, tv.url, "plex-outsider-token", plextv_contract)
        machine = plex.state.machine_identifier

        def server(devices: list[dict[str, Any]]) -> dict[str, Any] | None:
            return next((d for d in devices if d["clientIdentifier"] == machine), None)

        mine, theirs = server(owned), server(shared)
        assert mine is not None
        assert theirs is not None
        assert server(outsider) is None
        assert "server" in mine["provides"].split(",")
        assert mine["owned"] is True
        assert mine["accessToken"] == "plex-owner-token"
        assert theirs["owned"] is False
        assert theirs["accessToken"] != "plex-friend-token"
        assert any("server" not in d["provides"] for d in owned)  # clients are listed too
        local = next(c for c in theirs["connections"] if c["local"])
        assert local["uri"] == plex.url
        assert any(c["relay"] for c in theirs["connections"])
        async with http.get(
            f"{local['uri']}/library/sections",
            headers={"X-Plex-Token": theirs["accessToken"], "Accept": "application/json"},
        ) as r:
            assert r.status == 200


async def test_without_json_accept_answers_xml(http: aiohttp.ClientSession) -> None:
    async with running("plextv") as tv:
        headers = {k: v for k, v in CLIENT.items() if k != "Accept"}
        async with http.post(f"{tv.url}/api/v2/pins", headers=headers) as r:
            assert r.status == 201
            assert r.content_type == "application/xml"
            root = ET.fromstring(await r.text())
    assert root.tag == "pin"
    assert root.get("code")
    assert root.find("location") is not None


@pytest.mark.parametrize("token", [None, "not-a-token"])
async def test_resources_need_a_known_token(http: aiohttp.ClientSession, token: str | None) -> None:
    async with running("plextv") as tv:
        headers = {"X-Plex-Token": token} if token else {}
        body = await call(http, "GET", f"{tv.url}/api/v2/resources", status=401, headers=headers)
    assert body["errors"][0]["code"] == 1001
