"""Route transforms: header edits, JSON edits, and the Plex XML to JSON adapter."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from medianest.config.gateway import HeaderEdits, JsonEdits
from medianest.errors import UpstreamContractError
from medianest.gateway.transforms import PlexXmlError, edit_headers, edit_json, plex_xml_to_json
from medianest.simulators import SimulatorOptions, build_simulator
from tests.support.servers import serve_asgi

# --- headers -----------------------------------------------------------------------------


def test_header_edits_remove_then_set_then_add() -> None:
    headers = [
        ("content-type", "text/xml"),
        ("X-Plex-Token", "secret"),
        ("cache-control", "no-cache"),
        ("Cache-Control", "private"),
        ("vary", "accept"),
    ]
    edits = HeaderEdits(
        remove=("x-plex-token",),
        set={"Cache-Control": "max-age=30"},
        add={"Vary": "Accept-Encoding", "X-Served-By": "medianest"},
    )
    assert edit_headers(headers, edits) == [
        ("content-type", "text/xml"),
        ("vary", "accept"),
        ("cache-control", "max-age=30"),
        ("vary", "Accept-Encoding"),
        ("x-served-by", "medianest"),
    ]
    assert headers[1] == ("X-Plex-Token", "secret")


def test_no_header_edits_is_a_copy() -> None:
    headers = [("a", "1")]
    out = edit_headers(headers, HeaderEdits())
    assert out == headers
    assert out is not headers


# --- JSON bodies -------------------------------------------------------------------------


def edited(data: Any, **edits: Any) -> Any:
    out = edit_json(json.dumps(data).encode(), JsonEdits(**edits))
    assert out is not None
    return json.loads(out)


def test_json_remove_and_rename_dotted_paths() -> None:
    data = {"MediaContainer": {"size": 2, "identifier": "x", "title1": "Movies"}}
    assert edited(
        data,
        remove=("MediaContainer.identifier", "missing.path", "MediaContainer.size.deeper"),
        rename={"MediaContainer.size": "count", "MediaContainer.title1": "MediaContainer.title"},
    ) == {"MediaContainer": {"count": 2, "title": "Movies"}}


def test_json_rename_keeps_the_field_in_place() -> None:
    out = edit_json(b'{"a": 1, "b": 2, "c": 3}', JsonEdits(rename={"b": "z"}))
    assert out == b'{"a":1,"z":2,"c":3}'


def test_json_wildcards_over_lists_and_objects() -> None:
    data = {
        "results": [
            {"id": 1, "mediaInfo": {"status": 5, "secret": "s"}},
            {"id": 2},
            "not-an-object",
        ],
        "byId": {"1": {"internal": True, "title": "A"}, "2": {"title": "B"}},
    }
    assert edited(
        data,
        rename={"results.*.id": "tmdbId"},
        remove=("results.*.mediaInfo.secret", "byId.*.internal", "results.2"),
    ) == {
        "results": [{"tmdbId": 1, "mediaInfo": {"status": 5}}, {"tmdbId": 2}],
        "byId": {"1": {"title": "A"}, "2": {"title": "B"}},
    }
    assert edited([{"a": 1, "b": 2}, {"a": 3}], remove=("*.a",)) == [{"b": 2}, {}]
    assert edited({"items": [1, 2, 3]}, remove=("items.*",)) == {"items": []}


def test_json_output_is_compact_utf8() -> None:
    assert (
        edit_json('{ "title" : "Amélie" }'.encode(), JsonEdits()) == '{"title":"Amélie"}'.encode()
    )


def test_json_edits_leave_large_or_non_json_bodies_alone() -> None:
    body = json.dumps({"a": "x" * 100}).encode()
    assert edit_json(body, JsonEdits(remove=("a",), max_bytes=len(body) - 1)) is None
    assert edit_json(body, JsonEdits(remove=("a",), max_bytes=len(body))) == b"{}"
    assert edit_json(b"<MediaContainer/>", JsonEdits(remove=("a",))) is None
    assert edit_json(b"\xff\xfe{", JsonEdits()) is None


# --- Plex XML -> JSON --------------------------------------------------------------------


def test_plex_xml_maps_elements_and_types_attributes() -> None:
    xml = b"""<?xml version="1.0" encoding="UTF-8"?>
<MediaContainer size="2" allowSync="1" librarySectionID="1" title1="Movies">
  <Video ratingKey="10" key="/library/metadata/10" guid="plex://movie/5d77" title="1984"
         year="1984" rating="7.5" duration="6720000" addedAt="1700000000"
         originallyAvailableAt="1984-10-10" librarySectionUUID="1234">
    <Media id="5" bitrate="8000" videoResolution="1080" aspectRatio="1.78">
      <Part id="6" size="1024" file="/m/1984.mkv" has64bitOffsets="0"/>
    </Media>
    <Genre tag="Drama"/><Genre tag="Sci-Fi"/>
    <Guid id="imdb://tt0087803"/>
  </Video>
  <Directory ratingKey="20" key="/library/metadata/20/children" type="show" leafCount="8"/>
  <Video ratingKey="30" sessionKey="1" librarySectionID="2">
    <User id="1" title="owner"/><Player local="1" state="playing"/>
  </Video>
</MediaContainer>"""
    assert json.loads(plex_xml_to_json(xml)) == {
        "MediaContainer": {
            "size": 2,
            "allowSync": True,
            "librarySectionID": 1,
            "title1": "Movies",
            "Metadata": [
                {
                    "ratingKey": "10",
                    "key": "/library/metadata/10",
                    "guid": "plex://movie/5d77",
                    "title": "1984",
                    "year": 1984,
                    "rating": 7.5,
                    "duration": 6720000,
                    "addedAt": 1700000000,
                    "originallyAvailableAt": "1984-10-10",
                    "librarySectionUUID": "1234",
                    "Media": [
                        {
                            "id": 5,
                            "bitrate": 8000,
                            "videoResolution": "1080",
                            "aspectRatio": 1.78,
                            "Part": [
                                {
                                    "id": 6,
                                    "size": 1024,
                                    "file": "/m/1984.mkv",
                                    "has64bitOffsets": False,
                                }
                            ],
                        }
                    ],
                    "Genre": [{"tag": "Drama"}, {"tag": "Sci-Fi"}],
                    "Guid": [{"id": "imdb://tt0087803"}],
                },
                {
                    "ratingKey": "20",
                    "key": "/library/metadata/20/children",
                    "type": "show",
                    "leafCount": 8,
                },
                {
                    "ratingKey": "30",
                    "sessionKey": "1",
                    "librarySectionID": "2",
                    "User": {"id": "1", "title": "owner"},
                    "Player": {"local": True, "state": "playing"},
                },
            ],
        }
    }


def test_plex_sections_stay_directories() -> None:
    xml = b'<MediaContainer size="1"><Directory key="1" type="movie" refreshing="0"/>'
    xml += b"</MediaContainer>"
    assert json.loads(plex_xml_to_json(xml)) == {
        "MediaContainer": {
            "size": 1,
            "Directory": [{"key": "1", "type": "movie", "refreshing": False}],
        }
    }


@pytest.mark.parametrize(
    "xml",
    [
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
        b'<MediaContainer title1="&lol2;"/>',
        b'<!DOCTYPE MediaContainer SYSTEM "file:///etc/passwd"><MediaContainer/>',
        '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x [<!ENTITY e "e">]><x>&e;</x>'.encode(
            "utf-16"
        ),
        b"<MediaContainer><Video></MediaContainer>",
        b"",
    ],
    ids=["entity-expansion", "external-dtd", "utf16-doctype", "malformed", "empty"],
)
def test_plex_xml_with_doctype_or_malformed_is_refused(xml: bytes) -> None:
    with pytest.raises(PlexXmlError) as caught:
        plex_xml_to_json(xml)
    assert isinstance(caught.value, UpstreamContractError)
    assert caught.value.service == "plex"


async def test_plex_xml_matches_the_simulators_json() -> None:
    """The converted XML answer of the Plex simulator equals its JSON answer, exactly."""
    options = SimulatorOptions(size=24, sessions=2)
    token = {"X-Plex-Token": options.token}
    async with (
        serve_asgi(build_simulator("plex", options)) as plex,
        aiohttp.ClientSession(plex.url, headers=token) as http,
    ):

        async def both(path: str) -> tuple[Any, Any]:
            async with http.get(path, headers={"Accept": "application/json"}) as r:
                assert r.status == 200
                as_json = await r.json()
            async with http.get(path) as r:
                assert r.status == 200
                assert "xml" in r.headers["content-type"]
                converted = json.loads(plex_xml_to_json(await r.read()))
            return as_json, converted

        page = "/library/sections/1/all?includeGuids=1"
        page += "&X-Plex-Container-Start=2&X-Plex-Container-Size=5"
        as_json, converted = await both(page)
        assert converted == as_json
        assert as_json["MediaContainer"]["offset"] == 2
        assert as_json["MediaContainer"]["Metadata"][0]["Guid"]
        movie = as_json["MediaContainer"]["Metadata"][0]["ratingKey"]
        shows, _ = await both("/library/sections/2/all")
        show = shows["MediaContainer"]["Metadata"][0]["ratingKey"]
        for path in (
            "/library/sections",
            f"/library/metadata/{movie}",
            f"/library/metadata/{show}",
            "/library/sections/2/all",
            f"/library/metadata/{show}/children",
            "/library/recentlyAdded",
            "/hubs/search?query=the",
            "/status/sessions",
            "/identity",
        ):
            as_json, converted = await both(path)
            assert converted == as_json, path
