"""Two hub instances on one database and one broker: a key revoked on one is refused by the
other at once (not after its cache TTL); a person disabled on one loses sessions on both."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from medianest.app import Hub, create_app
from medianest.config import load_settings
from tests.support.servers import serve_asgi
from tests.support.waiting import until


async def status_of(url: str, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as answer:
        return answer.status


async def test_revocations_reach_the_other_instance(tmp_path: Path) -> None:
    hubs, apps = [], []
    for port in (18001, 18002):
        settings = load_settings(
            overrides={
                "data_dir": str(tmp_path),
                "server": {"port": port},
                "messaging": {"poll_interval": 0.05},
            }
        )
        hub = Hub(settings)
        hubs.append(hub)
        apps.append(create_app(settings, hub=hub, configure_logs=False))
    async with serve_asgi(apps[0]) as one, serve_asgi(apps[1]) as two:
        first, second = hubs
        assert first.api_keys is not None
        assert second.api_keys is not None
        assert first.identity is not None
        assert second.identity is not None
        _, key = await first.api_keys.create("script", "ops", ["services:read"])
        headers = {"X-Api-Key": key}
        for server in (one, two):
            assert await status_of(f"{server.url}/api/v1/services", headers) == 200
        info = await first.api_keys.get(key.split("_")[1])
        await first.api_keys.revoke(info.key_id)
        assert await status_of(f"{one.url}/api/v1/services", headers) == 401

        async def refused_on_two() -> bool:
            return await status_of(f"{two.url}/api/v1/services", headers) == 401

        await until(refused_on_two, "the second instance to drop the revoked key")

        await first.identity.users.create_local("root", "long-password-41")  # the admin
        person = await first.identity.users.create_local(
            "ann", "long-password-42", role="user", must_change_password=False
        )
        heard: list[str] = []
        sessions = second.identity.sessions
        real = sessions.invalidate_user

        def spy(user_id: str) -> None:
            heard.append(user_id)
            real(user_id)

        sessions.invalidate_user = spy  # type: ignore[method-assign]
        opened = await second.identity.open_session(person, "bearer", user_agent=None, ip=None)
        bearer = {"Authorization": f"Bearer {opened.access_token}"}
        assert await status_of(f"{two.url}/api/v1/services", bearer) == 200
        await first.identity.disable_user(person.id, actor_id=None)

        async def signed_out_on_two() -> bool:
            return await status_of(f"{two.url}/api/v1/services", bearer) == 401

        await until(signed_out_on_two, "the second instance to drop the disabled person")

        async def told() -> bool:  # through the broker, not by its 5 s session cache expiring
            return person.id in heard

        await until(told, "the second instance to hear of the change")
