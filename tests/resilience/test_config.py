"""PolicyConfig: defaults, validation, TOML shape, and Policy.from_config."""

from __future__ import annotations

import tomllib

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from medianest.resilience import (
    BreakerState,
    FakeClock,
    LastGood,
    Policy,
    PolicyConfig,
)

TOML = """
[upstreams.plex.policy.timeout]
attempt = 5
total = 20

[upstreams.plex.policy.retry]
max_attempts = 4
budget = { ratio = 0.1 }

[upstreams.plex.policy.breaker]
window_type = "time"
window_size = 30
open_duration = 15

[upstreams.plex.policy.bulkhead]
enabled = false
"""


def test_defaults_are_the_documented_ones() -> None:
    config = PolicyConfig()
    assert (config.timeout.attempt, config.timeout.total) == (10.0, 30.0)
    assert (config.retry.max_attempts, config.retry.base_delay, config.retry.max_delay) == (
        3,
        0.1,
        5.0,
    )
    budget = config.retry.budget
    assert (budget.ratio, budget.window, budget.min_per_second) == (0.2, 10.0, 10.0)
    b = config.breaker
    assert (b.failure_rate_threshold, b.slow_call_rate_threshold, b.slow_call_duration) == (
        50.0,
        100.0,
        5.0,
    )
    assert (b.window_type, b.window_size, b.minimum_calls) == ("count", 20, 10)
    assert (b.open_duration, b.half_open_probes, b.max_half_open_wait) == (30.0, 3, 60.0)
    h = config.bulkhead
    assert (h.max_concurrent, h.max_queued, h.max_wait) == (64, 256, 1.0)


def test_every_field_is_described() -> None:
    def walk(model: type) -> None:
        assert model.__doc__
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            assert field.description, f"{model.__name__}.{name} has no description"
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                walk(annotation)

    walk(PolicyConfig)


def test_loads_from_the_toml_tables() -> None:
    raw = tomllib.loads(TOML)["upstreams"]["plex"]["policy"]
    config = PolicyConfig.model_validate(raw)
    assert config.timeout.attempt == 5
    assert config.retry.max_attempts == 4
    assert config.retry.budget.ratio == 0.1
    assert config.retry.budget.window == 10  # untouched keys keep their defaults
    assert config.breaker.window_type == "time"
    assert not config.bulkhead.enabled


@pytest.mark.parametrize(
    "raw",
    [
        {"retries": {}},
        {"retry": {"max_attempt": 3}},
        {"retry": {"budget": {"ratio": -1}}},
        {"retry": {"base_delay": 10, "max_delay": 1}},
        {"breaker": {"failure_rate_threshold": 0}},
        {"breaker": {"window_type": "sliding"}},
        {"breaker": {"open_duration": 60, "max_open_duration": 30}},
        {"breaker": {"open_duration_jitter": 1}},
        {"bulkhead": {"max_concurrent": 0}},
        {"timeout": {"attempt": -1}},
    ],
)
def test_bad_configuration_is_refused(raw: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PolicyConfig.model_validate(raw)


def test_configuration_is_frozen() -> None:
    config = PolicyConfig()
    with pytest.raises(ValidationError):
        config.timeout.attempt = 3  # type: ignore[misc]


async def test_from_config_builds_every_component(
    clock: FakeClock, registry: CollectorRegistry
) -> None:
    changes: list[tuple[str, BreakerState, BreakerState]] = []
    policy = Policy.from_config(
        "plex",
        PolicyConfig.model_validate(tomllib.loads(TOML)["upstreams"]["plex"]["policy"]),
        clock=clock,
        registry=registry,
        listeners=(lambda *change: changes.append(change),),
    )
    assert policy.name == "plex"
    assert policy.timeout is not None
    assert policy.timeout.seconds == 5
    assert policy.timeout.clock is clock
    assert policy.total_timeout is not None
    assert policy.total_timeout.kind == "total"
    assert policy.retry is not None
    assert policy.retry.max_attempts == 4
    assert policy.retry.budget is not None
    assert policy.retry.budget.ratio == 0.1
    assert policy.breaker is not None
    assert policy.breaker.timed_window
    assert policy.bulkhead is None
    assert policy.fallback is not None
    assert isinstance(policy.fallback.strategies[0], LastGood)
    policy.breaker.force_open()
    assert changes == [("plex", BreakerState.CLOSED, BreakerState.FORCED_OPEN)]
    assert registry.get_sample_value("medianest_circuit_breaker_state", {"breaker": "plex"}) == 3


def test_from_config_leaves_out_what_is_disabled(registry: CollectorRegistry) -> None:
    config = PolicyConfig.model_validate(
        {
            "timeout": {"attempt": 0, "total": 0},
            "retry": {"max_attempts": 1},
            "breaker": {"enabled": False},
            "bulkhead": {"enabled": False},
            "fallback": {"last_good": False},
        }
    )
    policy = Policy.from_config("kuma", config, registry=registry)
    assert policy == Policy("kuma")
    no_budget = PolicyConfig.model_validate(
        {"retry": {"budget": {"enabled": False}}, "breaker": {"max_half_open_wait": 0}}
    )
    built = Policy.from_config("kuma", no_budget, registry=registry)
    assert built.retry is not None
    assert built.retry.budget is None
    assert built.breaker is not None
    assert built.breaker.max_half_open_wait is None
    assert built.bulkhead is not None
    assert built.bulkhead.max_concurrent == 64


def test_several_policies_share_one_registry(registry: CollectorRegistry) -> None:
    for name in ("plex", "plex", "overseerr"):
        Policy.from_config(name, PolicyConfig(), registry=registry)
