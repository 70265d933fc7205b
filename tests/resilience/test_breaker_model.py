"""The breaker against a small reference model, on random sequences of operations.

The model is written for clarity, not speed: the window is a plain list re-counted on every
read, states are strings. Hypothesis drives both with the same calls, outcomes (some held
open across clock advances and transitions), clock advances and manual transitions, and
compares after every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from prometheus_client import CollectorRegistry

from medianest.errors import CircuitOpenError
from medianest.resilience import BreakerState, CircuitBreaker, FakeClock

WINDOW, MINIMUM, PROBES = 6, 4, 2
THRESHOLD, SLOW_THRESHOLD, SLOW = 50.0, 75.0, 1.0
OPEN_FOR, GROWTH, CAP, MAX_HALF_OPEN = 10.0, 2.0, 35.0, 25.0


@dataclass
class Model:
    now: float = 0.0
    state: str = "closed"
    generation: int = 0
    window: list[tuple[bool, bool]] = field(default_factory=list)
    trips: int = 0
    open_until: float = 0.0
    since: float = 0.0
    started: int = 0
    probes: list[tuple[bool, bool]] = field(default_factory=list)

    def go(self, state: str) -> None:
        self.state, self.generation, self.since = state, self.generation + 1, self.now
        self.window, self.started, self.probes = [], 0, []

    def trip(self) -> None:
        self.trips += 1
        self.open_until = self.now + min(CAP, OPEN_FOR * GROWTH ** (self.trips - 1))
        self.go("open")

    def tick(self) -> None:
        if self.state == "open" and self.now >= self.open_until:
            self.go("half_open")
        elif self.state == "half_open" and self.now - self.since >= MAX_HALF_OPEN:
            self.trip()

    @staticmethod
    def bad(outcomes: list[tuple[bool, bool]]) -> bool:
        calls = len(outcomes)
        failed = sum(f for f, _ in outcomes)
        slow = sum(s for _, s in outcomes)
        return 100 * failed >= THRESHOLD * calls or 100 * slow >= SLOW_THRESHOLD * calls

    def acquire(self) -> int | None:
        if self.state in ("closed", "disabled"):
            return self.generation
        self.tick()
        if self.state == "half_open" and self.started < PROBES:
            self.started += 1
            return self.generation
        return None

    def finish(self, permit: int, failed: bool, slow: bool, ignored: bool) -> None:
        if permit != self.generation:
            return
        if ignored:
            if self.state == "half_open" and self.started:
                self.started -= 1
            return
        if self.state == "closed":
            self.window = [*self.window, (failed, slow)][-WINDOW:]
            if len(self.window) >= MINIMUM and self.bad(self.window):
                self.trip()
        elif self.state == "half_open":
            self.probes.append((failed, slow))
            if len(self.probes) >= PROBES:
                if self.bad(self.probes):
                    self.trip()
                else:
                    self.trips = 0
                    self.go("closed")

    def counts(self) -> tuple[int, int, int]:
        outcomes = self.probes if self.state == "half_open" else self.window
        return len(outcomes), sum(f for f, _ in outcomes), sum(s for _, s in outcomes)


outcome = st.tuples(st.booleans(), st.booleans(), st.sampled_from([False] * 5 + [True]))


class BreakerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(start=0.0)
        self.breaker = CircuitBreaker(
            "model",
            window_size=WINDOW,
            minimum_calls=MINIMUM,
            failure_rate_threshold=THRESHOLD,
            slow_call_rate_threshold=SLOW_THRESHOLD,
            slow_call_duration=SLOW,
            open_duration=OPEN_FOR,
            open_duration_multiplier=GROWTH,
            max_open_duration=CAP,
            half_open_probes=PROBES,
            max_half_open_wait=MAX_HALF_OPEN,
            ignore=lambda exc: isinstance(exc, KeyError),
            clock=self.clock,
            metrics=CollectorRegistry(),
        )
        self.model = Model()
        self.running: list[tuple[int, int]] = []

    def _acquire(self) -> int | None:
        expected = self.model.acquire()
        try:
            permit = self.breaker.acquire()
        except CircuitOpenError:
            assert expected is None
            return None
        assert expected is not None
        return permit

    def _finish(self, permit: int, model_permit: int, result: tuple[bool, bool, bool]) -> None:
        failed, slow, ignored = result
        duration = 2 * SLOW if slow else SLOW / 2
        if ignored:
            self.breaker.on_error(permit, duration, KeyError("ignored"))
        elif failed:
            self.breaker.on_error(permit, duration, ConnectionError("down"))
        else:
            self.breaker.on_success(permit, duration)
        self.model.finish(model_permit, failed, slow, ignored)

    @rule(result=outcome)
    def call(self, result: tuple[bool, bool, bool]) -> None:
        model_permit = self.model.generation
        permit = self._acquire()
        if permit is not None:
            self._finish(permit, model_permit, result)

    @rule()
    def start(self) -> None:
        model_permit = self.model.generation
        permit = self._acquire()
        if permit is not None:
            self.running.append((permit, model_permit))

    @precondition(lambda self: self.running)
    @rule(index=st.integers(min_value=0, max_value=10), result=outcome)
    def finish(self, index: int, result: tuple[bool, bool, bool]) -> None:
        permit, model_permit = self.running.pop(index % len(self.running))
        self._finish(permit, model_permit, result)

    @rule(seconds=st.sampled_from([0.5, 1.0, 5.0, 9.9, 10.0, 20.0, 25.0, 40.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.model.now += seconds

    @rule(action=st.sampled_from(["force_open", "disable", "close", "reset"]))
    def steer(self, action: str) -> None:
        getattr(self.breaker, action)()
        model = self.model
        if action == "force_open" and model.state != "forced_open":
            model.go("forced_open")
        elif action == "disable" and model.state != "disabled":
            model.go("disabled")
        elif (action == "close" and model.state != "closed") or action == "reset":
            model.trips = 0
            model.go("closed")

    @invariant()
    def agrees_with_the_model(self) -> None:
        self.model.tick()
        snapshot = self.breaker.snapshot()
        assert snapshot.state == BreakerState(self.model.state)
        assert (snapshot.calls, snapshot.failures, snapshot.slow_calls) == self.model.counts()
        if self.model.state == "open":
            assert snapshot.retry_after == self.model.open_until - self.model.now
        else:
            assert snapshot.retry_after is None


BreakerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestBreakerAgainstModel = BreakerMachine.TestCase
