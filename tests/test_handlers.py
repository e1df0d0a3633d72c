"""The example tools in handlers/: directly, and through dispatch as the model would call them."""

import datetime as dt
import json
import math
import zoneinfo
from typing import Any

import pytest

import handlers  # noqa: F401  (registers the tools)
from handlers import calculator, clock, countries
from orchestrator import config, tools
from orchestrator.protocols.assistants import models
from orchestrator.tools import dispatch

HAS_TZDATA = bool(zoneinfo.available_timezones())
needs_tzdata = pytest.mark.skipif(not HAS_TZDATA, reason="no time zone database on this machine")


async def call(name: str, arguments: dict[str, Any] | str) -> dispatch.ToolResult:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    calls = [models.RequiredToolCall(id="call_1", function=models.FunctionCall(name, text))]
    [result] = await dispatch.dispatch(
        calls, tools.default_registry, config.ToolsConfig(), run_id="r", thread_id="t"
    )
    return result


# --- calculator -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("-2 ** 2", -4),
        ("2 ** -1", 0.5),
        ("2 ^ 3 ^ 2", 512),
        ("7 // 2", 3),
        ("-7 // 2", -4),
        ("7 % 3", 1),
        ("7 / 2", 3.5),
        ("--3", 3),
        ("+4", 4),
        ("1.5e3 + .5", 1500.5),
        ("2 ** 100", 2**100),
        ("sqrt(16) + abs(-3)", 7.0),
        ("round(2.675, 2)", round(2.675, 2)),
        ("round(7.5)", 8),
        ("min(3, 1, 2) + max(4)", 5),
        ("log(8, 2)", 3.0),
        ("floor(-1.5) + ceil(1.2)", 0),
        ("pi", math.pi),
        ("sin(0) + cos(0)", 1.0),
        ("  ( 1+ 1 )  ", 2),
    ],
)
def test_evaluate(expression: str, value: float) -> None:
    result = calculator.evaluate(expression)
    assert result == value
    assert type(result) is type(value)


@pytest.mark.parametrize(
    ("expression", "complaint"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("1 +", "ended too early"),
        ("(1 + 2", "ended too early"),
        ("1 + 2)", r"unexpected '\)' at position 5"),
        ("1 / 0", "division by zero"),
        ("1 % 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("2 $ 3", r"unexpected character '\$'"),
        ("__import__(1)", "unknown function '__import__'"),
        ("open('x')", 'unexpected character "\'"'),
        ("x + 1", "unknown name 'x' at position 0"),
        ("sqrt(1, 2)", r"sqrt\(\) does not take 2 argument"),
        ("sqrt(-1)", r"sqrt\(\): math domain error"),
        ("(-8) ** 0.5", "not a real number"),
        ("9 ** 9 ** 9", "too large"),
        ("10 ** 400 * 10 ** 400 * 10 ** 3000", "too large"),
        ("10.0 ** 400", "too large"),
        ("exp(1000)", "too large"),
        ("1e308 * 10", "too large"),
        ("(" * 100 + "1" + ")" * 100, "nests deeper"),
        ("-" * 100 + "1", "nests deeper"),
        ("1+" * 600 + "1", "longer than"),
        ("round(1.5, 0.5)", "digits must be an integer"),
        ("round()", "unexpected '\\)'"),
        ("min(1,)", "unexpected '\\)'"),
    ],
)
def test_evaluate_errors(expression: str, complaint: str) -> None:
    with pytest.raises(calculator.CalculationError, match=complaint):
        calculator.evaluate(expression)


@pytest.mark.anyio
async def test_calculate_tool() -> None:
    ok = await call("calculate", {"expression": "(1200 * 1.08) / 12"})
    assert json.loads(ok.output) == {"expression": "(1200 * 1.08) / 12", "result": 108.0}
    bad = await call("calculate", {"expression": "1/0"})
    assert json.loads(bad.output) == {
        "error": {"type": "tool_exception", "message": "CalculationError: division by zero"}
    }
    empty = await call("calculate", {"expression": ""})
    assert empty.error is not None
    assert empty.error.type == "invalid_arguments"
    assert "length >= 1" in empty.error.message


# --- clock ------------------------------------------------------------------------------------

MOMENT = dt.datetime(2024, 7, 1, 12, 0, tzinfo=dt.UTC)


def test_time_in_utc_works_without_tzdata() -> None:
    assert clock.time_in("UTC", MOMENT) == clock.LocalTime(
        timezone="UTC",
        local_time="2024-07-01T12:00:00+00:00",
        utc_offset="+00:00",
        weekday="Monday",
        is_dst=False,
    )


@needs_tzdata
def test_time_in_zones_and_dst() -> None:
    paris = clock.time_in("Europe/Paris", MOMENT)
    assert (paris.local_time, paris.utc_offset, paris.is_dst) == (
        "2024-07-01T14:00:00+02:00", "+02:00", True,
    )  # fmt: skip
    winter = clock.time_in("Europe/Paris", MOMENT.replace(month=1))
    assert (winter.utc_offset, winter.is_dst) == ("+01:00", False)
    kolkata = clock.time_in("Asia/Kolkata", MOMENT)
    assert kolkata.local_time == "2024-07-01T17:30:00+05:30"


def test_unknown_zone() -> None:
    with pytest.raises(ValueError, match=r"unknown time zone 'Mars/Olympus'.*IANA"):
        clock.time_in("Mars/Olympus", MOMENT)
    with pytest.raises(ValueError, match="unknown time zone"):
        clock.time_in("../../etc/passwd", MOMENT)


@pytest.mark.anyio
async def test_current_time_tool() -> None:
    result = await call("current_time", "")
    now = json.loads(result.output)
    assert now["timezone"] == "UTC"
    assert now["utc_offset"] == "+00:00"
    parsed = dt.datetime.fromisoformat(now["local_time"])
    assert parsed.tzinfo is not None
    bad = await call("current_time", {"timezone": "Nowhere/Special"})
    assert bad.error is not None
    assert "unknown time zone" in bad.error.message


@pytest.mark.anyio
@needs_tzdata
async def test_convert_time_tool() -> None:
    result = await call(
        "convert_time", {"when": "2024-05-01T09:00:00+02:00", "to_timezone": "Asia/Tokyo"}
    )
    assert json.loads(result.output)["local_time"] == "2024-05-01T16:00:00+09:00"
    naive = await call("convert_time", {"when": "2024-05-01T09:00:00", "to_timezone": "UTC"})
    assert naive.error is not None
    assert naive.error.type == "invalid_arguments"
    assert "$.when" in naive.error.message


# --- countries --------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["Japan", "japan", " JP ", "jp"])
def test_find_by_name_or_code(query: str) -> None:
    found = countries.find(query)
    assert found.found
    assert found.country is not None
    assert found.country.capital == "Tokyo"


@pytest.mark.parametrize(
    ("query", "code"), [("USA", "US"), ("uk", "GB"), ("Great Britain", "GB"), ("korea", "KR")]
)
def test_find_by_alias(query: str, code: str) -> None:
    found = countries.find(query)
    assert found.country is not None
    assert found.country.code == code


def test_find_ignores_accents_and_suggests() -> None:
    assert countries.find("brasil").found is False
    assert countries.find("Brasil").suggestions == ["Brazil"]
    assert countries.find("germny").suggestions == ["Germany"]
    nothing = countries.find("Atlantis")
    assert (nothing.found, nothing.country, nothing.suggestions) == (False, None, [])


def test_dataset_is_consistent() -> None:
    codes = [c.code for c in countries.COUNTRIES]
    assert len(set(codes)) == len(codes)
    assert all(len(code) == 2 and code.isupper() for code in codes)
    assert all(len(c.currency) == 3 and c.population_millions > 0 for c in countries.COUNTRIES)


@pytest.mark.anyio
async def test_lookup_country_tool() -> None:
    result = await call("lookup_country", {"name": "brazil"})
    body = json.loads(result.output)
    assert body["found"] is True
    assert body["country"]["capital"] == "Brasília"
    assert "Brasília" in result.output  # non-ASCII kept as is


@pytest.mark.anyio
async def test_search_countries_strict_tool() -> None:
    everything = await call(
        "search_countries",
        {"continent": None, "min_population_millions": None, "sort_by": None, "limit": None},
    )
    rows = json.loads(everything.output)
    assert len(rows) == 10  # the default limit
    assert [r["name"] for r in rows] == sorted(r["name"] for r in rows)

    big_asia = await call(
        "search_countries",
        {"continent": "Asia", "min_population_millions": 200, "sort_by": "population", "limit": 2},
    )
    assert [r["name"] for r in json.loads(big_asia.output)] == ["India", "China"]

    clamped = await call("search_countries", {"limit": 500})
    assert len(json.loads(clamped.output)) == len(countries.COUNTRIES)
    assert len(json.loads((await call("search_countries", {"limit": -3})).output)) == 1

    for bad, where in (
        ({"continent": "Atlantis"}, "$.continent"),
        ({"limit": "all"}, "$.limit"),
        ({"limit": 5, "colour": "red"}, "colour"),
    ):
        result = await call("search_countries", bad)
        assert result.error is not None
        assert result.error.type == "invalid_arguments"
        assert where in result.error.message
