"""The retry policy on its own: decisions, server delays, back-off, tenacity wiring."""

from __future__ import annotations

import pytest

from orchestrator import config, errors
from orchestrator.http import retrying

CFG = config.RetryConfig(attempts=4, initial_backoff=0.5, max_backoff=8.0, max_retry_after=60.0)


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (408, {}, True),
        (409, {}, True),
        (429, {}, True),
        (500, {}, True),
        (503, {}, True),
        (400, {}, False),
        (401, {}, False),
        (404, {}, False),
        (500, {"x-should-retry": "false"}, False),
        (400, {"x-should-retry": "true"}, True),
        (400, {"x-should-retry": " TRUE "}, True),
        (500, {"x-should-retry": "maybe"}, True),
    ],
)
def test_should_retry(status: int, headers: dict[str, str], expected: bool) -> None:
    assert retrying.should_retry(status, headers) is expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after-ms": "nan", "retry-after": "9"}, 9.0),
        ({"retry-after-ms": "soon", "retry-after": "2.5"}, 2.5),
        ({"retry-after": "20"}, 20.0),
        ({"retry-after": "Thu, 01 Jan 1970 00:01:40 GMT"}, 40.0),
        ({"retry-after": "whenever"}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert retrying.parse_retry_after(headers, now=60.0) == expected


def test_backoff_grows_caps_and_jitters() -> None:
    assert [retrying.backoff(CFG, n, lambda: 0.0) for n in range(6)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        8.0,
    ]
    assert retrying.backoff(CFG, 1, lambda: 1.0) == 0.75
    assert retrying.backoff(CFG, 10_000, lambda: 0.0) == 8.0


def api(status: int, retry_after: float | None = None) -> errors.APIError:
    cls = errors.api_error_for_status(status)
    return cls("m", status=status, request_id="req_1", retry_after=retry_after)


def test_judge() -> None:
    policy = retrying.RetryPolicy(CFG)
    plain = api(400)
    assert policy.judge(plain, {}) is plain
    wrapped = policy.judge(api(500, 2.0), {})
    assert isinstance(wrapped, retrying.Retryable)
    assert wrapped.delay == 2.0
    zero = policy.judge(api(429, 0.0), {})
    assert isinstance(zero, retrying.Retryable)
    assert zero.delay is None  # a zero or negative ask falls back to back-off
    too_long = api(503, 61.0)
    limited = policy.judge(too_long, {})
    assert isinstance(limited, errors.RateLimitError)
    assert (limited.status, limited.retry_after, limited.request_id) == (503, 61.0, "req_1")
    assert limited.__cause__ is too_long
    rate = api(429, 3600.0)
    assert policy.judge(rate, {}) is rate
    assert policy.judge(api(503, 61.0), {"x-should-retry": "false"}).__class__ is errors.ServerError


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.mark.anyio
async def test_call_retries_with_server_delay_or_backoff() -> None:
    sleeps = Sleeps()
    policy = retrying.RetryPolicy(CFG, sleep=sleeps, rand=lambda: 0.0)
    seen: list[int] = []
    retried: list[tuple[int, str, float]] = []

    async def attempt(n: int) -> str:
        seen.append(n)
        if n == 1:
            raise retrying.Retryable(api(429), delay=0.25)
        if n < 4:
            raise retrying.Retryable(errors.APIConnectionError(f"drop {n}"))
        return "ok"

    result = await policy.call(attempt, lambda a, e, d: retried.append((a, str(e), d)))
    assert result == "ok"
    assert seen == [1, 2, 3, 4]
    assert sleeps.delays == [0.25, 1.0, 2.0]
    assert [(a, d) for a, _, d in retried] == [(1, 0.25), (2, 1.0), (3, 2.0)]


@pytest.mark.anyio
async def test_call_raises_the_last_error_with_its_cause() -> None:
    policy = retrying.RetryPolicy(CFG, sleep=Sleeps())
    cause = OSError("reset")

    async def attempt(n: int) -> None:
        error = errors.APIConnectionError(f"attempt {n}")
        error.__cause__ = cause
        raise retrying.Retryable(error)

    with pytest.raises(errors.APIConnectionError, match="attempt 4") as info:
        await policy.call(attempt)
    assert info.value.__cause__ is cause


@pytest.mark.anyio
async def test_call_does_not_retry_other_errors() -> None:
    sleeps = Sleeps()
    policy = retrying.RetryPolicy(CFG, sleep=sleeps)
    calls = 0

    async def attempt(n: int) -> None:
        nonlocal calls
        calls += 1
        raise errors.BadRequestError("no", status=400)

    with pytest.raises(errors.BadRequestError):
        await policy.call(attempt)
    assert calls == 1
    assert sleeps.delays == []
