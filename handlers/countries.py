"""Country facts from a small in-memory table (async tools; populations are rough estimates)."""

from __future__ import annotations

import difflib
import logging
import unicodedata
from typing import Final, Literal

import msgspec

from orchestrator.tools import ToolContext, tool

__all__ = [
    "COUNTRIES",
    "Country",
    "CountryLookup",
    "find",
    "lookup_country",
    "search_countries",
]

logger = logging.getLogger(__name__)

MAX_RESULTS: Final = 50

Continent = Literal["Africa", "Asia", "Europe", "North America", "Oceania", "South America"]


class Country(msgspec.Struct, frozen=True, kw_only=True):
    """Basic facts about a country."""

    name: str
    #: ISO 3166-1 alpha-2.
    code: str
    capital: str
    continent: Continent
    #: Approximate population in millions (2023 estimate).
    population_millions: float
    #: ISO 4217 currency code.
    currency: str
    languages: tuple[str, ...]


class CountryLookup(msgspec.Struct, frozen=True, kw_only=True):
    """The result of a look-up: the country, or the closest names when none matched."""

    query: str
    found: bool
    country: Country | None = None
    suggestions: list[str] = []


# name | ISO code | capital | continent | population, millions | currency | languages
_TABLE: Final = """
Argentina      | AR | Buenos Aires     | South America |   46.7 | ARS | Spanish
Australia      | AU | Canberra         | Oceania       |   26.6 | AUD | English
Brazil         | BR | Brasília         | South America |  216.4 | BRL | Portuguese
Canada         | CA | Ottawa           | North America |   40.1 | CAD | English, French
China          | CN | Beijing          | Asia          | 1410.7 | CNY | Mandarin Chinese
Egypt          | EG | Cairo            | Africa        |  112.7 | EGP | Arabic
France         | FR | Paris            | Europe        |   68.2 | EUR | French
Germany        | DE | Berlin           | Europe        |   84.5 | EUR | German
India          | IN | New Delhi        | Asia          | 1428.6 | INR | Hindi, English
Indonesia      | ID | Jakarta          | Asia          |  277.5 | IDR | Indonesian
Italy          | IT | Rome             | Europe        |   59.0 | EUR | Italian
Japan          | JP | Tokyo            | Asia          |  124.5 | JPY | Japanese
Kenya          | KE | Nairobi          | Africa        |   55.1 | KES | Swahili, English
Mexico         | MX | Mexico City      | North America |  128.5 | MXN | Spanish
New Zealand    | NZ | Wellington       | Oceania       |    5.2 | NZD | English, Māori
Nigeria        | NG | Abuja            | Africa        |  223.8 | NGN | English
Norway         | NO | Oslo             | Europe        |    5.5 | NOK | Norwegian
Peru           | PE | Lima             | South America |   34.4 | PEN | Spanish, Quechua, Aymara
South Africa   | ZA | Pretoria         | Africa        |   60.4 | ZAR | Zulu, Xhosa, Afrikaans
South Korea    | KR | Seoul            | Asia          |   51.7 | KRW | Korean
Spain          | ES | Madrid           | Europe        |   48.1 | EUR | Spanish
United Kingdom | GB | London           | Europe        |   68.3 | GBP | English
United States  | US | Washington, D.C. | North America |  334.9 | USD | English
Vietnam        | VN | Hanoi            | Asia          |   98.9 | VND | Vietnamese
"""


def _parse(table: str) -> tuple[Country, ...]:
    keys = ("name", "code", "capital", "continent", "population_millions", "currency")
    rows = []
    for line in table.strip().splitlines():
        *cells, languages = (cell.strip() for cell in line.split("|"))
        row = {**dict(zip(keys, cells, strict=True)), "languages": languages.split(", ")}
        rows.append(row)
    # convert validates each row, so a typo in the table fails at import, not in a tool call
    return msgspec.convert(rows, tuple[Country, ...], strict=False)


COUNTRIES: Final = _parse(_TABLE)

_ALIASES: Final = {
    "usa": "US",
    "united states of america": "US",
    "america": "US",
    "uk": "GB",
    "britain": "GB",
    "great britain": "GB",
    "england": "GB",
    "korea": "KR",
    "republic of korea": "KR",
    "viet nam": "VN",
}


def _key(text: str) -> str:
    """Case- and accent-insensitive form: "Brasília" and "brasilia" compare equal."""
    decomposed = unicodedata.normalize("NFKD", text.strip().casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


_INDEX: Final = {
    **{_key(c.name): c for c in COUNTRIES},
    **{_key(c.code): c for c in COUNTRIES},
    **{alias: c for alias, code in _ALIASES.items() for c in COUNTRIES if c.code == code},
}


def find(query: str) -> CountryLookup:
    """Look ``query`` up by name, ISO code or common alias."""
    country = _INDEX.get(_key(query))
    if country is not None:
        return CountryLookup(query=query, found=True, country=country)
    names = {_key(c.name): c.name for c in COUNTRIES}
    close = difflib.get_close_matches(_key(query), list(names), n=3, cutoff=0.6)
    return CountryLookup(query=query, found=False, suggestions=[names[k] for k in close])


@tool
async def lookup_country(name: str, context: ToolContext) -> CountryLookup:
    """Look up basic facts about one country: capital, continent, population, currency, languages.

    Accepts the English name, the two-letter ISO code or a common alias ("USA", "UK").
    When nothing matches, `found` is false and `suggestions` lists close names: retry with one
    of them. Only a small set of countries is known; say so rather than guess when a country
    is missing.

    Args:
        name: Country name, ISO 3166-1 alpha-2 code, or alias, e.g. "Japan", "JP", "UK".
    """
    result = find(name)
    logger.debug(
        "country lookup %r: %s",
        name,
        result.found,
        extra={"run_id": context.run_id, "tool_call_id": context.tool_call_id},
    )
    return result


@tool(strict=True)
async def search_countries(
    continent: Continent | None = None,
    min_population_millions: float = 0,
    sort_by: Literal["name", "population"] = "name",
    limit: int = 10,
) -> list[Country]:
    """List known countries, optionally filtered by continent and minimum population.

    Use this to compare countries or to answer "which/how many" questions over the known set
    (a small sample of countries, not the whole world).

    Args:
        continent: Only countries on this continent; null for all continents.
        min_population_millions: Only countries with at least this many million people.
        sort_by: "name" (A to Z) or "population" (largest first).
        limit: Maximum number of countries to return, 1 to 50.
    """
    # strict schemas cannot carry bounds (see orchestrator.tools.schema_rewrite):
    # clamp, don't refuse
    limit = max(1, min(limit, MAX_RESULTS))
    rows = [
        c
        for c in COUNTRIES
        if (continent is None or c.continent == continent)
        and c.population_millions >= min_population_millions
    ]
    if sort_by == "population":
        rows.sort(key=lambda c: c.population_millions, reverse=True)
    return rows[:limit]
