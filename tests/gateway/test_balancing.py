"""Load balancing and passive outlier ejection of an instance pool (no sockets, FakeClock)."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from prometheus_client import REGISTRY

from medianest.config.gateway import Balance, HashOn, Instance, Outlier
from medianest.errors import UpstreamUnavailable
from medianest.gateway.balancing import Endpoint, InstancePool, NoHealthyInstance
from medianest.resilience.clock import FakeClock

A, B, C, D = (f"http://10.0.0.{n}:8080" for n in range(1, 5))


def make_pool(
    *weights: int,
    balance: Balance = "round_robin",
    clock: FakeClock | None = None,
    seed: int = 7,
    **outlier: Any,
) -> InstancePool:
    instances = [
        Instance.model_validate({"url": u, "weight": w})
        for u, w in zip((A, B, C, D), weights, strict=False)
    ]
    return InstancePool(
        instances,
        balance=balance,
        outlier=Outlier(**outlier),
        hash_on=HashOn(header="X-User") if balance == "consistent_hash" else None,
        clock=clock or FakeClock(),
        random=random.Random(seed),
        name="media",
    )


def picks(pool: InstancePool, n: int, **kw: Any) -> Counter[str]:
    return Counter(pool.pick(**kw).id for _ in range(n))


def by_id(pool: InstancePool, url: str) -> Endpoint:
    return next(e for e in pool.endpoints if e.id == url)


def fail(pool: InstancePool, url: str, times: int) -> None:
    for _ in range(times):
        pool.record_failure(by_id(pool, url), "5xx")


# --- methods ------------------------------------------------------------------------------


def test_endpoint_ids_are_normalised_and_duplicates_merge() -> None:
    pool = InstancePool(
        [
            Instance.model_validate({"url": f"{A}/", "weight": 2}),
            Instance.model_validate({"url": A}),
        ],
        balance="round_robin",
        outlier=Outlier(),
    )
    (only,) = pool.endpoints
    assert (only.id, only.url, only.weight) == (A, A, 3)


def test_round_robin_takes_turns_and_skips_excluded() -> None:
    pool = make_pool(1, 5, 1)
    assert [pool.pick().id for _ in range(6)] == [A, B, C, A, B, C]
    assert picks(pool, 300) == {A: 100, B: 100, C: 100}
    assert [pool.pick(exclude={B}).id for _ in range(4)] == [A, C, A, C]


def test_weighted_round_robin_is_nginx_smooth() -> None:
    pool = make_pool(5, 1, 1, balance="weighted_round_robin")
    assert [pool.pick().id for _ in range(7)] == [A, A, B, A, C, A, A]
    assert picks(pool, 700) == {A: 500, B: 100, C: 100}
    assert picks(pool, 600, exclude={A}) == {B: 300, C: 300}


def test_least_outstanding_follows_weights_when_idle() -> None:
    even = picks(make_pool(1, 1, 1, balance="least_outstanding"), 6000)
    assert all(1800 < even[u] < 2200 for u in (A, B, C))
    weighted = picks(make_pool(1, 3, balance="least_outstanding"), 4000)
    assert 2800 < weighted[B] < 3200


def test_least_outstanding_prefers_fewer_requests_in_flight() -> None:
    pool = make_pool(1, 1, 1, balance="least_outstanding")
    busy = by_id(pool, A)
    with pool.track(busy), pool.track(busy), pool.track(by_id(pool, B)):
        assert busy.outstanding == 2
        counts = picks(pool, 3000)
    assert busy.outstanding == 0
    assert counts[A] == 0
    assert counts[C] > counts[B] > 0


def test_least_outstanding_breaks_ties_by_weight() -> None:
    pool = make_pool(1, 3, 1, balance="least_outstanding")
    with pool.track(by_id(pool, C)):
        counts = picks(pool, 4000)
    assert counts[C] == 0
    assert 1.2 < counts[B] / counts[A] < 1.6  # A-B pairs split 1:3, A-C and B-C pairs 1:0


def test_track_decrements_even_when_the_attempt_fails() -> None:
    pool = make_pool(1)
    endpoint = pool.pick()
    with pytest.raises(RuntimeError), pool.track(endpoint):
        raise RuntimeError("upstream blew up")
    assert endpoint.outstanding == 0


def test_consistent_hash_is_stable_and_weighted() -> None:
    keys = [f"user-{n}" for n in range(8000)]
    pool = make_pool(1, 1, 2, balance="consistent_hash")
    first = {k: pool.pick(hash_key=k).id for k in keys}
    assert {k: pool.pick(hash_key=k).id for k in keys} == first
    other_process = make_pool(1, 1, 2, balance="consistent_hash", seed=99)
    assert {k: other_process.pick(hash_key=k).id for k in keys} == first
    shares = Counter(first.values())
    assert 1800 < shares[A] < 2200
    assert 1800 < shares[B] < 2200
    assert 3700 < shares[C] < 4300


def test_consistent_hash_moves_only_the_removed_instances_keys() -> None:
    keys = [f"user-{n}" for n in range(4000)]
    pool = make_pool(1, 1, 1, 1, balance="consistent_hash")
    before = {k: pool.pick(hash_key=k).id for k in keys}
    excluded = {k: pool.pick(hash_key=k, exclude={B}).id for k in keys}
    pool.update([Instance.model_validate({"url": u}) for u in (A, C, D)])
    after = {k: pool.pick(hash_key=k).id for k in keys}
    moved = {k for k in keys if before[k] != after[k]}
    assert moved == {k for k in keys if before[k] == B}
    assert after == excluded
    assert {after[k] for k in moved} == {A, C, D}


def test_consistent_hash_falls_to_the_next_instance_on_ejection() -> None:
    clock = FakeClock()
    pool = make_pool(1, 1, 1, balance="consistent_hash", clock=clock, consecutive_failures=1)
    keys = [f"k{n}" for n in range(500)]
    home = {k: pool.pick(hash_key=k).id for k in keys}
    fallback = {k: pool.pick(hash_key=k, exclude={A}).id for k in keys}
    pool.record_failure(by_id(pool, A), "connect")
    assert {k: pool.pick(hash_key=k).id for k in keys} == fallback
    clock.advance(30)
    assert {k: pool.pick(hash_key=k).id for k in keys} == home


def test_consistent_hash_without_a_key_is_round_robin() -> None:
    pool = make_pool(1, 1, 1, balance="consistent_hash")
    assert [pool.pick().id for _ in range(6)] == [A, B, C, A, B, C]


def test_no_healthy_instance_names_the_route() -> None:
    pool = make_pool(1, 1)
    with pytest.raises(NoHealthyInstance) as caught:
        pool.pick(exclude={A, B})
    assert isinstance(caught.value, UpstreamUnavailable)
    assert caught.value.service == "media"
    assert "2 excluded" in str(caught.value)


# --- outlier detection -------------------------------------------------------------------


def test_ejection_after_consecutive_failures_and_success_resets() -> None:
    clock = FakeClock()
    pool = make_pool(1, 1, 1, 1, clock=clock, consecutive_failures=3, base_ejection=30)
    fail(pool, A, 2)
    pool.record_success(by_id(pool, A))
    fail(pool, A, 2)
    assert by_id(pool, A).consecutive_failures == 2
    assert picks(pool, 8)[A] == 2
    assert pool.record_failure(by_id(pool, A), "timeout") is True
    assert picks(pool, 30)[A] == 0
    state = next(s for s in pool.snapshot() if s["url"] == A)
    assert state == {
        "url": A,
        "weight": 1,
        "outstanding": 0,
        "ejected": True,
        "ejected_for_s": 30.0,
        "ejections": 1,
        "consecutive_failures": 0,
        "last_failure": "timeout",
    }
    sample = {"route": "media", "instance": A}
    assert (REGISTRY.get_sample_value("medianest_gateway_ejections_total", sample) or 0) >= 1


def test_readmission_when_the_ejection_ends() -> None:
    clock = FakeClock()
    pool = make_pool(1, 1, clock=clock, consecutive_failures=1, base_ejection=10)
    fail(pool, A, 1)
    clock.advance(9.5)
    assert picks(pool, 4) == {B: 4}
    assert pool.snapshot()[0]["ejected_for_s"] == 0.5
    clock.advance(0.5)
    assert picks(pool, 4) == {A: 2, B: 2}
    assert pool.snapshot()[0]["ejected"] is False


def test_ejection_time_grows_and_is_capped() -> None:
    clock = FakeClock()
    pool = make_pool(1, 1, clock=clock, consecutive_failures=1, base_ejection=10, max_ejection=25)
    a = by_id(pool, A)
    durations = []
    for _ in range(4):
        pool.pick()
        fail(pool, A, 1)
        assert a.ejected_until is not None
        durations.append(a.ejected_until - clock.monotonic())
        clock.advance(a.ejected_until - clock.monotonic())
    assert durations == [10, 20, 25, 25]
    assert a.ejections == 4


def test_ejection_multiplier_is_forgotten_after_a_long_healthy_spell() -> None:
    clock = FakeClock()
    pool = make_pool(1, 1, clock=clock, consecutive_failures=1, base_ejection=10, max_ejection=60)
    a = by_id(pool, A)
    fail(pool, A, 1)
    clock.advance(10)
    pool.pick()
    clock.advance(59)
    fail(pool, A, 1)
    assert a.ejected_until == clock.monotonic() + 20
    clock.advance(20)
    pool.pick()
    clock.advance(60)
    fail(pool, A, 1)
    assert (a.ejections, a.ejected_until) == (1, clock.monotonic() + 10)


def test_failures_while_ejected_do_not_extend_the_ejection() -> None:
    clock = FakeClock()
    pool = make_pool(1, 1, clock=clock, consecutive_failures=1, base_ejection=10)
    fail(pool, A, 1)
    until = by_id(pool, A).ejected_until
    clock.advance(5)
    assert pool.record_failure(by_id(pool, A), "gateway") is False
    assert by_id(pool, A).ejected_until == until
    assert by_id(pool, A).ejections == 1


def test_never_more_than_max_ejected_percent() -> None:
    clock = FakeClock()
    pool = make_pool(
        1, 1, 1, 1, clock=clock, consecutive_failures=2, base_ejection=10, max_ejected_percent=50
    )
    for url in (A, B, C):
        fail(pool, url, 2)
    assert [s["ejected"] for s in pool.snapshot()] == [True, True, False, False]
    assert picks(pool, 10) == {C: 5, D: 5}
    clock.advance(10)
    pool.pick()
    assert pool.record_failure(by_id(pool, C), "5xx") is True


def test_a_lone_instance_stays_unless_the_percent_allows_all() -> None:
    guarded = make_pool(1, consecutive_failures=1, max_ejected_percent=99)
    fail(guarded, A, 5)
    assert guarded.pick().id == A
    allowed = make_pool(1, consecutive_failures=1, max_ejected_percent=100)
    fail(allowed, A, 1)
    with pytest.raises(NoHealthyInstance, match="1 ejected"):
        allowed.pick()


# --- updates -----------------------------------------------------------------------------


def test_update_keeps_the_state_of_instances_that_stay() -> None:
    clock = FakeClock()
    pool = make_pool(1, 1, 1, clock=clock, consecutive_failures=1, max_ejected_percent=100)
    a, b = by_id(pool, A), by_id(pool, B)
    fail(pool, B, 1)
    with pool.track(a):
        pool.update(
            [
                Instance.model_validate({"url": f"{A}/", "weight": 4}),
                Instance.model_validate({"url": B}),
                Instance.model_validate({"url": D}),
            ],
            balance="weighted_round_robin",
        )
        assert by_id(pool, A) is a
        assert (a.outstanding, a.weight) == (1, 4)
    assert a.outstanding == 0
    assert by_id(pool, B) is b
    assert b.ejected(clock.monotonic())
    assert [e.id for e in pool.endpoints] == [A, B, D]
    assert picks(pool, 50) == {A: 40, D: 10}
