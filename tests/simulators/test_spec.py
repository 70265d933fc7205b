"""The contract helper itself: it must catch bad requests and bad responses."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.simulators.conftest import running
from tests.simulators.spec import Contract, SpecViolation


def test_request_validation_catches_what_a_client_got_wrong(
    overseerr_contract: Contract, plex_contract: Contract
) -> None:
    good = json.dumps({"mediaType": "movie", "mediaId": 603}).encode()
    headers = {"X-Api-Key": "k", "Content-Type": "application/json"}
    overseerr_contract.validate_request(
        "POST",
        "http://h/api/v1/request",
        headers=headers,
        body=good,
        content_type="application/json",
    )
    bad = json.dumps({"mediaType": "film", "mediaId": 603}).encode()
    with pytest.raises(SpecViolation):
        overseerr_contract.validate_request(
            "POST",
            "http://h/api/v1/request",
            headers=headers,
            body=bad,
            content_type="application/json",
        )
    with pytest.raises(SpecViolation):
        overseerr_contract.validate_request(
            "GET", "http://h/api/v1/request?filter=everything", headers=headers
        )
    plex_headers = {"X-Plex-Token": "t", "X-Plex-Client-Identifier": "c"}
    plex_contract.validate_request(
        "GET", "http://h:32400/library/sections/1/all?includeGuids=1", headers=plex_headers
    )
    with pytest.raises(SpecViolation):  # the 2026 spec requires the client identifier
        plex_contract.validate_request(
            "GET", "http://h:32400/library/sections/1/all", headers={"X-Plex-Token": "t"}
        )


def test_response_validation_catches_a_wrong_shape(
    plex_contract: Contract, plextv_contract: Contract
) -> None:
    wrong = json.dumps(
        {
            "MediaContainer": {
                "size": 1,
                "Metadata": [
                    {"ratingKey": 1, "key": "/k", "title": "t", "type": "movie", "addedAt": 1}
                ],
            }
        }
    )
    with pytest.raises(SpecViolation, match="ratingKey"):
        plex_contract.validate_response(
            "GET", "http://h:1/library/sections/1/all", 200, wrong.encode()
        )
    with pytest.raises(SpecViolation, match="not documented"):
        plex_contract.validate_response("GET", "http://h:1/library/sections/1/all", 418, b"{}")
    with pytest.raises(SpecViolation, match="in no spec"):
        plex_contract.validate_response("GET", "http://h:1/no/such/path", 200, b"{}")
    with pytest.raises(SpecViolation, match="code"):
        plextv_contract.validate_response(
            "POST", "http://127.0.0.1:9/api/v2/pins", 201, b'{"id": 1}'
        )


async def test_recorded_requests_can_be_validated(
    http: aiohttp.ClientSession, overseerr_contract: Contract
) -> None:
    async with running("overseerr", size=30) as ov:
        title = ov.state.catalogue.title(ov.state.catalogue.size + 2)
        async with http.post(
            f"{ov.url}/api/v1/request",
            json={"mediaType": "movie", "mediaId": title.tmdb_id},
            headers={"X-Api-Key": "overseerr-api-key"},
        ) as r:
            assert r.status == 201
        async with http.get(
            f"{ov.url}/api/v1/request?sortDirection=asc", headers={"X-Api-Key": "overseerr-api-key"}
        ) as r:
            assert r.status == 400
    created, listed = ov.app.requests
    overseerr_contract.validate_recorded(created)
    with pytest.raises(SpecViolation):
        overseerr_contract.validate_recorded(listed)  # Overseerr's spec has no sortDirection
