"""Overhead of the resilience Policy around a no-op coroutine, in ns per call.

Runs every variant side by side in one process, interleaved over several rounds, and
prints the median of the rounds, so that a noisy shared machine affects them alike. The
figure that matters is "overhead": the variant's time minus the bare ``await noop()``.

    .venv/bin/python bench/policy_overhead.py [--calls 20000] [--rounds 7] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry

from medianest.resilience import (
    Bulkhead,
    CircuitBreaker,
    Fallback,
    LastGood,
    Policy,
    PolicyConfig,
    Retry,
    RetryBudget,
    Static,
    Timeout,
)

YIELD_EVERY = 50


async def noop() -> None:
    return None


def variants() -> dict[str, Callable[[], Awaitable[object]]]:
    """Name -> a zero-argument coroutine function doing one call of that variant."""
    registry = CollectorRegistry()
    full = Policy(
        name="full",
        timeout=Timeout(10.0, name="full"),
        total_timeout=Timeout(30.0, kind="total", name="full"),
        retry=Retry(3, budget=RetryBudget(), name="full"),
        breaker=CircuitBreaker("full", metrics=registry),
        bulkhead=Bulkhead(64, max_queued=256, max_wait=1.0, name="full"),
        fallback=Fallback(LastGood(), Static(None)),
    )
    configured = Policy.from_config("configured", PolicyConfig(), registry=registry)
    timeout = Timeout(10.0)
    retry = Retry(3, budget=RetryBudget())
    breaker = CircuitBreaker("alone", metrics=registry)
    bulkhead = Bulkhead(64)
    fallback_only = Policy(name="fallback", fallback=Fallback(LastGood(), Static(None)))
    empty = Policy(name="empty")

    async def asyncio_timeout() -> None:
        async with asyncio.timeout(10.0):
            await noop()

    return {
        "bare await noop()": noop,
        "Policy (empty)": lambda: empty.call(noop),
        "asyncio.timeout (reference)": asyncio_timeout,
        "Timeout alone": lambda: timeout.call(noop),
        "Retry + budget alone": lambda: retry.call(noop),
        "CircuitBreaker alone": lambda: breaker.call(noop),
        "Bulkhead alone": lambda: bulkhead.call(noop),
        "Fallback alone (Policy)": lambda: fallback_only.call(noop),
        "full Policy.call": lambda: full.call(noop),
        "full Policy.call, key": lambda: full.call(noop, key="k"),
        "full Policy.execute": lambda: full.execute(noop),
        "from_config(default).call": lambda: configured.call(noop),
    }


async def measure(fn: Callable[[], Awaitable[object]], calls: int) -> float:
    """Mean ns per call over ``calls`` calls, yielding to the loop every ``YIELD_EVERY``.

    A server's event loop turns between requests; a loop that never turns would keep every
    cancelled timeout handle in its heap and make each new timer slower and slower, which
    no real process sees. The yields cost every variant alike, bare included.
    """
    start = time.perf_counter_ns()
    for _ in range(calls // YIELD_EVERY):
        for _ in range(YIELD_EVERY):
            await fn()
        await asyncio.sleep(0)
    return (time.perf_counter_ns() - start) / (calls // YIELD_EVERY * YIELD_EVERY)


async def run(calls: int, rounds: int) -> dict[str, list[float]]:
    cases = variants()
    results: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():
        await measure(fn, calls // 10)
    for _ in range(rounds):
        for name, fn in cases.items():
            results[name].append(await measure(fn, calls))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per round per variant")
    parser.add_argument("--rounds", type=int, default=7, help="rounds (median reported)")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    results = asyncio.run(run(args.calls, args.rounds))
    bare = statistics.median(results["bare await noop()"])
    loop = "uvloop" if args.uvloop else "asyncio"
    print(f"{args.rounds} rounds x {args.calls} calls, event loop: {loop}, median ns/call")
    print(f"{'variant':<28} {'ns/call':>9} {'overhead':>9} {'spread':>13}")
    for name, samples in results.items():
        median = statistics.median(samples)
        spread = f"{min(samples):.0f}-{max(samples):.0f}"
        print(f"{name:<28} {median:>9.0f} {median - bare:>9.0f} {spread:>13}")


if __name__ == "__main__":
    main()
