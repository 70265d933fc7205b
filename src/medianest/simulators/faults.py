"""Fault injection shared by every simulator.

A :class:`FaultRule` says *what* goes wrong (``kind``), *where* (``route`` glob on the path,
optional ``method``) and *how often* (``rate`` as a probability, ``times`` as a budget).
The kinds:

``latency``
    wait ``latency`` (+ up to ``jitter``) seconds before the request reaches the service.
``error``
    answer ``status`` with ``body`` instead of calling the service.
``down``
    the service is hard down: ``mode="reset"`` drops the TCP connection without any HTTP
    answer (an RST, like a crashed process or a firewall reject); ``mode="503"`` answers
    ``503 Service Unavailable`` like a proxy in front of a dead upstream.
``drip``
    the real answer, but its body is sent ``chunk_size`` bytes at a time with
    ``chunk_delay`` seconds between chunks (slow network, stalled reverse proxy).
``hang``
    accept the request and never answer (until the client gives up, or the simulator's
    ``hang_limit`` passes and the connection is dropped).

Rules are evaluated in order and several may apply to one request (latency plus an error,
for instance). Randomness is deterministic: whether rule *i* fires on its *n*-th matching
request is a pure function of ``(seed, i, n)``, so a run with the same seed and the same
request order injects the same faults. :class:`FaultControl` is the live rule set a test
holds (``app.faults``); the simulators also expose it as ``/__sim__/faults`` over HTTP.
"""

from __future__ import annotations

import fnmatch
import hashlib
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

FaultKind = Literal["latency", "error", "down", "drip", "hang"]


class FaultRule(BaseModel):
    """One kind of misbehaviour on the routes matching ``route`` (and ``method``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: FaultKind
    route: str = Field("*", description="fnmatch glob on the request path, e.g. /api/v1/*")
    method: str | None = Field(None, description="HTTP method to match; any when unset")
    rate: float = Field(1.0, ge=0.0, le=1.0, description="probability per matching request")
    times: int | None = Field(None, ge=0, description="fire at most this many times")
    latency: float = Field(0.0, ge=0.0, description="latency: seconds to wait")
    jitter: float = Field(0.0, ge=0.0, description="latency: extra random 0..jitter seconds")
    status: int = Field(503, ge=400, le=599, description="error: HTTP status to answer")
    body: str | None = Field(None, description="error: body; the service's usual error if unset")
    content_type: str | None = Field(None, description="error: content type of ``body``")
    mode: Literal["reset", "503"] = Field("reset", description="down: drop or answer 503")
    chunk_size: int = Field(16, ge=1, description="drip: bytes per chunk")
    chunk_delay: float = Field(0.05, ge=0.0, description="drip: seconds between chunks")
    name: str = Field("", description="label used in stats; defaults to kind@route")

    @property
    def label(self) -> str:
        return self.name or f"{self.kind}@{self.method or '*'} {self.route}"

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return fnmatch.fnmatchcase(path, self.route)


_RULES = TypeAdapter(list[FaultRule])


def parse_rules(data: Any) -> list[FaultRule]:
    """Validate rules from JSON-like data (a list, or ``{"rules": [...]}``)."""
    if isinstance(data, Mapping):
        data = data.get("rules", [])
    return _RULES.validate_python(data)


@dataclass(frozen=True)
class FaultDecision:
    """What to do to one request; empty when no rule fired."""

    delay: float = 0.0
    hang: bool = False
    down: FaultRule | None = None
    error: FaultRule | None = None
    drip: FaultRule | None = None
    fired: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.fired


@dataclass
class _RuleState:
    rule: FaultRule
    seen: int = 0
    fired: int = 0


@dataclass
class FaultControl:
    """The live, thread-safe fault rule set of one simulator.

    ``set``/``add``/``clear`` change it at run time; ``stats`` counts how often each rule
    fired since it was installed. ``seed`` makes the dice deterministic.
    """

    seed: int = 0
    _states: list[_RuleState] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def of(cls, rules: Iterable[FaultRule], seed: int = 0) -> FaultControl:
        control = cls(seed=seed)
        control.set(rules)
        return control

    @property
    def rules(self) -> tuple[FaultRule, ...]:
        with self._lock:
            return tuple(s.rule for s in self._states)

    def set(self, rules: Iterable[FaultRule]) -> None:
        """Replace every rule (counters restart from zero)."""
        states = [_RuleState(rule) for rule in rules]
        with self._lock:
            self._states = states

    def add(self, *rules: FaultRule) -> None:
        """Append rules after the existing ones."""
        with self._lock:
            self._states.extend(_RuleState(rule) for rule in rules)

    def clear(self) -> None:
        self.set(())

    def stats(self) -> dict[str, int]:
        """How many times each rule fired, by label."""
        with self._lock:
            out: dict[str, int] = {}
            for state in self._states:
                out[state.rule.label] = out.get(state.rule.label, 0) + state.fired
            return out

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "seed": self.seed,
                "rules": [s.rule.model_dump(mode="json") for s in self._states],
                "stats": [
                    {"rule": s.rule.label, "seen": s.seen, "fired": s.fired} for s in self._states
                ],
            }

    def decide(self, method: str, path: str) -> FaultDecision:
        """Roll the dice of every rule matching ``method path`` and merge what fired."""
        delay = 0.0
        hang = False
        down = error = drip = None
        fired: list[str] = []
        with self._lock:
            for index, state in enumerate(self._states):
                rule = state.rule
                if not rule.matches(method, path):
                    continue
                ordinal = state.seen
                state.seen += 1
                if rule.times is not None and state.fired >= rule.times:
                    continue
                if rule.rate < 1.0 and _unit(self.seed, index, ordinal, 0) >= rule.rate:
                    continue
                state.fired += 1
                fired.append(rule.label)
                if rule.kind == "latency":
                    delay += rule.latency + rule.jitter * _unit(self.seed, index, ordinal, 1)
                elif rule.kind == "hang":
                    hang = True
                elif rule.kind == "down":
                    down = down or rule
                elif rule.kind == "error":
                    error = error or rule
                else:
                    drip = drip or rule
        return FaultDecision(delay, hang, down, error, drip, tuple(fired))


def _unit(seed: int, rule_index: int, ordinal: int, salt: int) -> float:
    """A deterministic number in [0, 1) for one (rule, request ordinal) pair."""
    digest = hashlib.blake2b(
        f"{seed}:{rule_index}:{ordinal}:{salt}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") / 2**64
