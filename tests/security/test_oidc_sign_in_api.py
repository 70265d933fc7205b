"""Single sign-on through the hub's own endpoints, against the real OpenID provider."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import pytest

from medianest.app import Hub, create_app
from medianest.config import load_settings
from tests.security.conftest import ROLE_MAP
from tests.support.oidc_provider import CLIENTS, REDIRECT_URI, RunningProvider
from tests.support.oidc_provider.browser import browser, sign_in
from tests.support.servers import serve_asgi


def hub_settings(tmp_path: Path, provider: RunningProvider) -> object:
    client = CLIENTS["basic"]
    return load_settings(
        overrides={
            "data_dir": str(tmp_path),
            "oidc": {
                "issuer": provider.issuer,
                "client_id": client.client_id,
                "client_secret": client.secret,
                "redirect_uri": REDIRECT_URI,
                "role_map": ROLE_MAP,
                "allowed_algorithms": [client.alg],
            },
        }
    )


@pytest.mark.parametrize(("login", "role"), [("alice", "admin"), ("bob", "user")])
async def test_single_sign_on_opens_a_session(
    tmp_path: Path, oidc_provider: RunningProvider, login: str, role: str
) -> None:
    settings = hub_settings(tmp_path, oidc_provider)
    hub = Hub(settings)  # type: ignore[arg-type]
    app = create_app(settings, hub=hub, configure_logs=False)  # type: ignore[arg-type]
    async with serve_asgi(app) as server, browser() as http:
        if login == "bob":  # someone else signed in first: bob's role comes from the map only
            assert hub.identity is not None
            await hub.identity.users.create_local("first", "first-password-1")
        start = f"{server.url}/api/v1/auth/oidc/login?return_to=/welcome"
        async with http.get(start, allow_redirects=False) as answer:
            assert answer.status == 302
            authorization = answer.headers["Location"]
        assert authorization.startswith(oidc_provider.issuer)
        assert "code_challenge_method=S256" in authorization
        params = await sign_in(http, authorization, REDIRECT_URI, login=login)
        callback = f"{server.url}/api/v1/auth/oidc/callback?{urlencode(params)}"
        async with http.get(callback, allow_redirects=False) as answer:
            assert answer.status == 303
            assert answer.headers["Location"] == "/welcome"
        async with http.get(f"{server.url}/api/v1/auth/me") as answer:
            me = await answer.json()
        assert me["user"]["role"] == role
        assert me["user"]["oidc_issuer"] == oidc_provider.issuer
        async with http.get(callback, allow_redirects=False) as answer:
            assert answer.status == 401  # the state cookie is spent, the code too


async def test_a_callback_without_the_state_cookie_is_refused(
    tmp_path: Path, oidc_provider: RunningProvider
) -> None:
    settings = hub_settings(tmp_path, oidc_provider)
    app = create_app(settings, configure_logs=False)  # type: ignore[arg-type]
    async with serve_asgi(app) as server, browser() as http:
        url = f"{server.url}/api/v1/auth/oidc/callback?code=x&state=y"
        async with http.get(url, allow_redirects=False) as answer:
            assert answer.status == 401
            assert "not started here" in (await answer.json())["detail"]
