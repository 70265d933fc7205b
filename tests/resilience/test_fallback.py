"""Fallback chains: order, predicates, stale last-good values, the all-failed error."""

from __future__ import annotations

from collections.abc import Hashable

import pytest

from medianest.errors import (
    BulkheadFull,
    CircuitOpenError,
    FallbackFailed,
    UpstreamError,
    UpstreamNotFound,
    UpstreamUnavailable,
)
from medianest.resilience import (
    Alternate,
    FakeClock,
    Fallback,
    LastGood,
    Static,
    fallback_errors,
    is_unavailable,
)


def down() -> UpstreamUnavailable:
    return UpstreamUnavailable("plex is down", service="plex")


async def test_the_first_strategy_that_answers_wins(clock: FakeClock) -> None:
    last_good = LastGood(clock=clock)
    chain = Fallback(last_good, Static([], name="empty"))
    chain.remember("sections", ["Movies"])
    served = await chain.recover(down(), "sections")
    assert (served.value, served.served_by, served.stale) == (["Movies"], "last_good", True)
    served = await chain.recover(down(), "other")
    assert (served.value, served.served_by, served.stale) == ([], "empty", False)


async def test_predicates_choose_which_strategies_try() -> None:
    chain = Fallback(
        Static("for circuits", name="circuit", when=lambda e: isinstance(e, CircuitOpenError)),
        Static("for the rest", name="rest"),
    )
    assert (await chain.recover(CircuitOpenError("plex"))).served_by == "circuit"
    assert (await chain.recover(down())).served_by == "rest"
    not_found = UpstreamNotFound("no such item", service="plex", status=404)
    with pytest.raises(UpstreamNotFound) as caught:
        await chain.recover(not_found)
    assert caught.value is not_found
    assert fallback_errors(not_found) == []
    assert not getattr(not_found, "__notes__", [])


@pytest.mark.parametrize(
    ("error", "handled"),
    [
        (CircuitOpenError("plex"), True),
        (BulkheadFull("plex", max_concurrent=1, max_queued=0), True),
        (ConnectionResetError(), True),
        (UpstreamError("500", service="plex", status=500), True),
        (UpstreamError("418", service="plex", status=418), False),
        (UpstreamNotFound("404", service="plex", status=404), False),
        (KeyError("bug"), False),
    ],
)
def test_default_predicate(error: Exception, handled: bool) -> None:
    assert is_unavailable(error) is handled


async def test_last_good_is_per_key_bounded_and_ages(clock: FakeClock) -> None:
    last_good = LastGood(max_entries=2, max_age=60, clock=clock)
    chain = Fallback(last_good)
    chain.remember("a", 1)
    chain.remember("b", 2)
    chain.remember("a", 10)  # refreshes "a"
    chain.remember("c", 3)  # evicts "b", the least recently stored
    chain.remember(None, 99)  # no key: nothing stored
    assert (await chain.recover(down(), "a")).value == 10
    assert (await chain.recover(down(), "c")).value == 3
    with pytest.raises(UpstreamUnavailable):
        await chain.recover(down(), "b")
    clock.advance(61)
    error = down()
    with pytest.raises(UpstreamUnavailable):
        await chain.recover(error, "a")
    assert "61s old" in str(fallback_errors(error)[0])
    with pytest.raises(UpstreamUnavailable):
        await chain.recover(down(), None)


async def test_when_all_fail_the_original_error_carries_the_others() -> None:
    async def mirror(exc: BaseException, key: Hashable | None) -> str:
        raise ConnectionRefusedError("mirror down too")

    chain = Fallback(LastGood(), Alternate(mirror, name="mirror"))
    original = down()
    with pytest.raises(UpstreamUnavailable) as caught:
        await chain.recover(original, "sections")
    assert caught.value is original
    errors = fallback_errors(caught.value)
    assert [type(e) for e in errors] == [LookupError, ConnectionRefusedError]
    assert caught.value.__notes__ == [
        "fallback 'last_good' failed: LookupError: no last good value for key 'sections'",
        "fallback 'mirror' failed: ConnectionRefusedError: mirror down too",
    ]


async def test_fallback_failed_can_be_raised_instead() -> None:
    chain = Fallback(LastGood(), raise_original=False)
    original = down()
    with pytest.raises(FallbackFailed) as caught:
        await chain.recover(original, "x")
    assert caught.value.original is original
    assert caught.value.__cause__ is original
    assert [type(e) for e in caught.value.fallback_errors] == [LookupError]


async def test_alternate_source_and_its_staleness() -> None:
    async def replica(exc: BaseException, key: Hashable | None) -> str:
        return f"replica answer for {key}"

    chain = Fallback(Alternate(replica, name="replica", stale=True))
    served = await chain.recover(down(), "k")
    assert (served.value, served.served_by, served.stale) == (
        "replica answer for k",
        "replica",
        True,
    )
    chain.remember("k", "ignored by alternates")
    assert repr(chain) == "Fallback(replica)"


def test_names_must_be_unique_and_not_primary() -> None:
    with pytest.raises(ValueError, match="unique"):
        Fallback(Static(1), Static(2))
    with pytest.raises(ValueError, match="primary"):
        Fallback(Static(1, name="primary"))
