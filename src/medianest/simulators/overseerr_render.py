"""Overseerr/Jellyseerr JSON shapes: User, MediaInfo, MediaRequest, details, search results.

Follows the code rather than the spec where they differ (NOTES.md 3.3): ``pageInfo`` has a
``pageSize``, TV details say ``numberOfSeasons``, request lists carry no titles, and
``mediaInfo`` is *absent* (not null) for titles Overseerr does not track. The Jellyseerr
flavour adds its fields (``jellyfinUsername``..., ``mediaUrl`` instead of ``plexUrl``,
``profileName``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from medianest.simulators.catalogue_items import Title
from medianest.simulators.overseerr_state import (
    Media,
    OverseerrState,
    Request,
    User,
    iso_ms,
)
from medianest.simulators.seeds import hex24, mix
from medianest.simulators.words import GENRES

JSON = dict[str, Any]
_CREATED = 1_600_000_000.0


def user_json(state: OverseerrState, user: User) -> JSON:
    out: JSON = {
        "permissions": user.permissions,
        "id": user.id,
        "email": user.email,
        "username": user.username,
        "userType": 1,
        "plexId": user.plex_id,
        "avatar": f"https://plex.tv/users/{hex24(user.plex_id)[:16]}/avatar?c=1",
        "movieQuotaLimit": None,
        "movieQuotaDays": None,
        "tvQuotaLimit": None,
        "tvQuotaDays": None,
        "createdAt": iso_ms(_CREATED + user.id),
        "updatedAt": iso_ms(_CREATED + user.id),
        "requestCount": sum(1 for r in state.requests.values() if r.requested_by == user.id),
        "displayName": user.username,
    }
    if state.flavour == "jellyseerr":
        out.update(userType=3, jellyfinUsername=user.username, jellyfinUserId=hex24(user.id)[:32])
    else:
        out["plexUsername"] = user.username
    return out


def media_json(state: OverseerrState, media: Media, *, with_requests: bool = False) -> JSON:
    title = state.catalogue.title(media.uid)
    rating_key = title.rating_key if title.in_library else None
    active = media.status not in (1, 6, 7)
    out: JSON = {
        "downloadStatus": [],
        "downloadStatus4k": [],
        "id": media.id,
        "mediaType": media.media_type,
        "tmdbId": title.tmdb_id,
        "tvdbId": title.tvdb_id,
        "imdbId": title.imdb_id,
        "status": media.status,
        "status4k": 1,
        "createdAt": iso_ms(media.created_at),
        "updatedAt": iso_ms(media.updated_at),
        "lastSeasonChange": iso_ms(media.updated_at),
        "mediaAddedAt": iso_ms(media.media_added_at) if media.media_added_at else None,
        "serviceId": 0 if active else None,
        "serviceId4k": None,
        "externalServiceId": media.uid if active else None,
        "externalServiceId4k": None,
        "externalServiceSlug": None,
        "externalServiceSlug4k": None,
        "ratingKey": rating_key,
        "ratingKey4k": None,
    }
    if rating_key is not None:
        key = quote(f"/library/metadata/{rating_key}", safe="")
        machine = state.options.plex_machine_identifier()
        if state.flavour == "jellyseerr":
            out["jellyfinMediaId"] = None
            out["mediaUrl"] = f"https://app.plex.tv/desktop#!/server/{machine}/details?key={key}"
        else:
            out["plexUrl"] = f"https://app.plex.tv/desktop#!/server/{machine}/details?key={key}"
            out["iOSPlexUrl"] = f"plex://preplay/?metadataKey={key}&server={machine}"
    if media.media_type == "tv":
        out["seasons"] = [
            {
                "id": media.id * 100 + number,
                "seasonNumber": number,
                "status": status,
                "status4k": 1,
                "createdAt": iso_ms(media.created_at),
                "updatedAt": iso_ms(media.updated_at),
            }
            for number, status in sorted(media.seasons.items())
        ]
    if with_requests:
        requests = [state.requests[i] for i in media.requests if i in state.requests]
        out["requests"] = [request_json(state, r, with_media=False) for r in requests]
    return out


def request_json(state: OverseerrState, request: Request, *, with_media: bool = True) -> JSON:
    tv = request.media_type == "tv"
    modified = state.users.get(request.modified_by or 0)
    out: JSON = {
        "id": request.id,
        "status": request.status,
        "createdAt": iso_ms(request.created_at),
        "updatedAt": iso_ms(request.updated_at),
        "type": request.media_type,
        "is4k": False,
        "serverId": 0,
        "profileId": 4,
        "rootFolder": "/tv" if tv else "/movies",
        "languageProfileId": 1 if tv else None,
        "tags": [],
        "isAutoRequest": False,
        "requestedBy": user_json(state, state.users[request.requested_by]),
        "modifiedBy": user_json(state, modified) if modified else None,
        "seasons": [
            {
                "id": season_id,
                "seasonNumber": number,
                "status": request.status,
                "createdAt": iso_ms(request.created_at),
                "updatedAt": iso_ms(request.updated_at),
            }
            for season_id, number in zip(request.season_ids, request.seasons, strict=True)
        ],
        "seasonCount": len(request.seasons),
    }
    if with_media:
        out["media"] = media_json(state, state.media_of(request))
    if state.flavour == "jellyseerr":
        out["profileName"] = "HD-1080p"
    return out


def _people(title: Title) -> JSON:
    cast = [
        {
            "id": 5000 + title.uid * 10 + i,
            "castId": i,
            "character": character,
            "creditId": hex24(title.uid * 10 + i),
            "gender": i % 3,
            "name": name,
            "order": i,
            "profilePath": None,
        }
        for i, (name, character) in enumerate(title.actors)
    ]
    crew = [
        {
            "id": 9000 + title.uid,
            "creditId": hex24(title.uid * 10 + 9),
            "gender": 0,
            "name": name,
            "job": "Director",
            "department": "Directing",
            "profilePath": None,
        }
        for name in title.directors
    ]
    return {"cast": cast, "crew": crew}


def _common(state: OverseerrState, title: Title) -> JSON:
    h = mix(state.options.seed, title.uid, 40)
    return {
        "id": title.tmdb_id,
        "posterPath": f"/p{hex24(h)[:12]}.jpg",
        "backdropPath": f"/b{hex24(h)[12:]}.jpg",
        "overview": title.summary,
        "popularity": round(1 + (h % 5000) / 10, 1),
        "voteAverage": title.rating,
        "voteCount": 10 + h % 5000,
        "genreIds": [GENRES.index(g) + 1 for g in title.genres],
        "originalLanguage": "en",
    }


def search_result(state: OverseerrState, title: Title) -> JSON:
    out = _common(state, title)
    if title.kind == "movie":
        out.update(mediaType="movie", title=title.title, originalTitle=title.title)
        out.update(releaseDate=title.released, adult=False, video=False)
    else:
        out.update(mediaType="tv", name=title.title, originalName=title.title)
        out.update(firstAirDate=title.released, originCountry=["US"])
    media = state.media_for(title.uid)
    if media is not None:
        out["mediaInfo"] = media_json(state, media)
    return out


def details_json(state: OverseerrState, title: Title) -> JSON:
    out = _common(state, title)
    del out["genreIds"]
    genres = [{"id": GENRES.index(g) + 1, "name": g} for g in title.genres]
    ids: JSON = {
        "imdbId": title.imdb_id,
        "facebookId": None,
        "instagramId": None,
        "twitterId": None,
    }
    out.update(genres=genres, credits=_people(title), homepage="", tagline="")
    out.update(productionCompanies=[], productionCountries=[], spokenLanguages=[])
    out.update(watchProviders=[], keywords=[], relatedVideos=[])
    if title.kind == "movie":
        out.update(imdbId=title.imdb_id, title=title.title, originalTitle=title.title)
        out.update(releaseDate=title.released, runtime=title.duration_ms // 60_000)
        out.update(status="Released", adult=False, video=False, budget=0, revenue=None)
    else:
        counts = [
            state.catalogue.episode_count(title.uid, s)
            for s in range(1, title.tmdb_season_count + 1)
        ]
        seasons = [
            {
                "id": title.tmdb_id * 100 + s,
                "airDate": f"{title.year + s - 1}-01-01",
                "episodeCount": count,
                "name": f"Season {s}",
                "overview": "",
                "posterPath": f"/s{hex24(title.tmdb_id * 100 + s)[:12]}.jpg",
                "seasonNumber": s,
            }
            for s, count in enumerate(counts, start=1)
        ]
        ended = title.uid % 3 == 0
        out.update(name=title.title, originalName=title.title, firstAirDate=title.released)
        out.update(lastAirDate=f"{title.year + len(counts) - 1}-12-01", inProduction=not ended)
        out.update(numberOfSeasons=len(counts), numberOfEpisodes=sum(counts), seasons=seasons)
        out.update(status="Ended" if ended else "Returning Series", type="Scripted")
        out.update(
            episodeRunTime=[title.duration_ms // 60_000], originCountry=["US"], languages=["en"]
        )
        out.update(
            createdBy=[],
            contentRatings={"results": [{"iso_3166_1": "US", "rating": title.content_rating}]},
        )
        out["networks"] = [{"id": 1, "name": title.studio, "originCountry": "US", "logoPath": None}]
        ids["tvdbId"] = title.tvdb_id
    out["externalIds"] = ids
    media = state.media_for(title.uid)
    if media is not None:
        out["mediaInfo"] = media_json(state, media, with_requests=True)
    return out
