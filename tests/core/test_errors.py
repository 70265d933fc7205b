"""Every error class has its own problem type and a sensible HTTP status."""

from __future__ import annotations

import pytest

from medianest import errors
from medianest.api.problems import INTERNAL, problem_type_for


def all_error_classes() -> list[type[errors.MediaNestError]]:
    found: list[type[errors.MediaNestError]] = []
    stack: list[type[errors.MediaNestError]] = [errors.MediaNestError]
    while stack:
        cls = stack.pop()
        found.append(cls)
        stack.extend(cls.__subclasses__())
    return [cls for cls in found if cls.__module__ == "medianest.errors"]


def instance(cls: type[errors.MediaNestError]) -> errors.MediaNestError:
    if issubclass(cls, errors.UpstreamError):
        return cls("x", service="plex")
    if cls is errors.WrongExpectedVersion:
        return errors.WrongExpectedVersion("s-1", 3, 5)
    if cls is errors.CircuitOpenError:
        return errors.CircuitOpenError("plex", retry_after=2)
    if cls is errors.TimeoutExceeded:
        return errors.TimeoutExceeded("slow", timeout=1.0)
    if cls is errors.BulkheadFull:
        return errors.BulkheadFull("plex", max_concurrent=1, max_queued=0)
    if cls is errors.FallbackFailed:
        return errors.FallbackFailed(ValueError("a"), [KeyError("b")])
    return cls("x")


@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda c: c.__name__)
def test_each_class_maps_to_a_problem(cls: type[errors.MediaNestError]) -> None:
    ptype = problem_type_for(instance(cls))
    assert ptype is not INTERNAL
    assert 400 <= ptype.status < 600


def test_problem_types_are_distinct_per_class() -> None:
    slugs = {cls.__name__: problem_type_for(instance(cls)).slug for cls in all_error_classes()}
    assert len(set(slugs.values())) == len(slugs), slugs


def test_messages_and_context() -> None:
    exc = errors.WrongExpectedVersion("req-1", 2, 4)
    assert str(exc) == "stream 'req-1' is at version 4, expected 2"
    assert exc.extra["actual"] == 4
    timeout = errors.TimeoutExceeded("too slow", timeout=2.0)
    assert isinstance(timeout, TimeoutError)
    assert isinstance(errors.UpstreamTimeout("t", service="plex"), TimeoutError)
    failed = errors.FallbackFailed(ValueError("boom"), [KeyError("k")])
    assert "1 fallback(s) failed" in str(failed)
    config = errors.ConfigurationError("bad", problems=[("a.b", "1", "an int")])
    assert config.problems == [("a.b", "1", "an int")]
