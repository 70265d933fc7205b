"""A fake upstream for saga steps: it makes each effect at most once per idempotency key.

:class:`Ledger` keeps everything in memory; :class:`FileLedger` keeps it in a directory so
that a process killed with SIGKILL and its successor share it. Both count the calls (how
often a step ran) and the effects (how often it really did something) per key, so a test
can assert "called twice, happened once".
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medianest.resilience import Retry
from medianest.resilience.retry import is_retryable
from medianest.sagas import SagaDefinition, Step, StepContext


def fast_retry(attempts: int = 3, *, any_error: bool = False) -> Retry:
    """No backoff (tests wait on conditions, not on time)."""
    retry_on: Callable[[BaseException], bool] = (lambda e: True) if any_error else is_retryable
    return Retry(attempts, base_delay=0.0, max_delay=0.0, retry_on=retry_on)


class Ledger:
    """The in-memory fake upstream (module docstring).

    ``failures[step]`` makes that step's next attempts raise ``errors[step]`` (OSError, a
    transient error, by default); ``undo_failing`` makes compensations fail; a step in
    ``gates`` makes its effect and then waits for the gate (a step in progress when its
    process stalls or dies).
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.applied: Counter[str] = Counter()
        self.results: dict[str, dict[str, Any]] = {}
        self.seen_results: dict[str, list[str]] = {}
        self.failures: dict[str, int] = {}
        self.errors: dict[str, Callable[[str], Exception]] = {}
        self.undo_calls: list[str] = []
        self.undone: Counter[str] = Counter()
        self.undo_failing: set[str] = set()
        self.gates: dict[str, asyncio.Event] = {}
        self.changed = asyncio.Event()

    async def execute(self, ctx: StepContext) -> dict[str, Any]:
        key = ctx.idempotency_key
        self.calls[key] += 1
        self.seen_results[key] = sorted(ctx.results)
        left = self.failures.get(ctx.step, 0)
        if left:
            self.failures[ctx.step] = left - 1
            self._changed()
            raise self.errors.get(ctx.step, OSError)(f"{ctx.step} failed (attempt {ctx.attempt})")
        if key not in self.results:
            self.applied[key] += 1
            self.results[key] = {"step": ctx.step, "ref": f"ref-{key}"}
        self._changed()
        gate = self.gates.get(ctx.step)
        if gate is not None:
            await gate.wait()
        return self.results[key]

    async def compensate(self, ctx: StepContext) -> None:
        self.undo_calls.append(ctx.step)
        self._changed()
        if ctx.step in self.undo_failing:
            raise RuntimeError(f"cannot undo {ctx.step}")
        if ctx.idempotency_key in self.results and not self.undone[ctx.idempotency_key]:
            self.undone[ctx.idempotency_key] += 1

    def _changed(self) -> None:
        self.changed.set()

    async def wait_for(self, check: Callable[[], bool], deadline: float = 20.0) -> None:
        async with asyncio.timeout(deadline):
            while not check():
                self.changed.clear()
                await self.changed.wait()

    def definition(
        self,
        name: str = "order",
        steps: Sequence[str] = ("a", "b", "c"),
        *,
        attempts: int = 3,
        undo_attempts: int = 2,
    ) -> SagaDefinition:
        return SagaDefinition(
            name,
            [
                Step(
                    step,
                    self.execute,
                    self.compensate,
                    timeout=30.0,
                    retry=fast_retry(attempts),
                    compensation_retry=fast_retry(undo_attempts, any_error=True),
                )
                for step in steps
            ],
        )


class FileLedger:
    """The same fake upstream in a directory, shared across processes.

    ``calls.log`` gets a line per call, ``applied.log`` a line per effect; the effect itself
    is the file ``effects/<key>.json``, created exclusively. When ``hang_step`` is set, that
    step writes ``<dir>/hanging`` after its effect and never returns.
    """

    def __init__(self, directory: Path, hang_step: str | None = None) -> None:
        self.directory = directory
        self.hang_step = hang_step
        (directory / "effects").mkdir(parents=True, exist_ok=True)

    def _log(self, name: str, line: str) -> None:
        with (self.directory / name).open("a") as out:
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())

    def lines(self, name: str) -> Counter[str]:
        path = self.directory / name
        return Counter(path.read_text().split("\n")[:-1]) if path.exists() else Counter()

    async def execute(self, ctx: StepContext) -> dict[str, Any]:
        key = ctx.idempotency_key
        self._log("calls.log", key)
        effect = self.directory / "effects" / f"{key.replace(':', '_')}.json"
        result = {"step": ctx.step, "ref": f"ref-{key}"}
        try:
            with effect.open("x") as out:
                json.dump(result, out)
        except FileExistsError:
            return dict(json.loads(effect.read_text()))
        self._log("applied.log", key)
        if ctx.step == self.hang_step:
            (self.directory / "hanging").write_text(str(os.getpid()))
            await asyncio.Event().wait()
        return result

    async def compensate(self, ctx: StepContext) -> None:
        self._log("undone.log", ctx.idempotency_key)

    def definition(self) -> SagaDefinition:
        return SagaDefinition(
            "order",
            [Step(s, self.execute, self.compensate, retry=fast_retry()) for s in ("a", "b", "c")],
        )
