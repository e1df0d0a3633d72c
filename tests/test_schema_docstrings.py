"""Docstrings → tool and parameter descriptions: Google, NumPy and Sphinx styles."""

from typing import Any

import pytest

from orchestrator import tools
from orchestrator.protocols.assistants import models
from orchestrator.tools import docstrings

GOOGLE = """Fetch the weather forecast.

    Covers the coming days only;
    past weather is not available.

    Args:
        city (str): City name,
            in English.
        days: How many days
            ahead.
        *extra: Ignored by the parser's name handling.

    Returns:
        A forecast.

    Raises:
        ValueError: never.
    """

NUMPY = """
    Fetch the weather forecast.

    Covers the coming days only;
    past weather is not available.

    Parameters
    ----------
    city : str
        City name,
        in English.
    days
        How many days
        ahead.
    lat, lon : float
        Coordinates.

    Returns
    -------
    Forecast
        A forecast.
    """

SPHINX = """Fetch the weather forecast.

    Covers the coming days only;
    past weather is not available.

    :param str city: City name,
        in English.
    :param days: How many days
        ahead.
    :type days: int
    :returns: A forecast.
    :raises ValueError: never.
    """

BODY = "Covers the coming days only;\npast weather is not available."


@pytest.mark.parametrize("doc", [GOOGLE, NUMPY, SPHINX], ids=["google", "numpy", "sphinx"])
def test_styles(doc: str) -> None:
    parsed = docstrings.parse(doc)
    assert parsed.summary == "Fetch the weather forecast."
    assert parsed.body == BODY
    assert parsed.params["city"] == "City name, in English."
    assert parsed.params["days"] == "How many days ahead."
    assert "Returns" not in parsed.description
    assert "A forecast" not in parsed.description
    assert "never" not in parsed.description


def test_numpy_shared_entry_and_google_star_names() -> None:
    assert docstrings.parse(NUMPY).params["lat"] == "Coordinates."
    assert docstrings.parse(NUMPY).params["lon"] == "Coordinates."
    assert docstrings.parse(GOOGLE).params["extra"] == "Ignored by the parser's name handling."


@pytest.mark.parametrize("doc", [None, "", "   \n  "])
def test_empty(doc: str | None) -> None:
    assert docstrings.parse(doc) == docstrings.Docstring()


def test_summary_only_and_multiline_summary() -> None:
    assert docstrings.parse("Just this.").description == "Just this."
    parsed = docstrings.parse("A summary that\n    wraps.\n\n    Then more.")
    assert parsed.summary == "A summary that wraps."
    assert parsed.body == "Then more."


def test_google_header_inside_text_is_not_a_section() -> None:
    parsed = docstrings.parse("Summary.\n\nNote the following:\n    indented text.")
    # "Note the following" is not a section name, so the text stays in the body
    assert "Note the following:" in parsed.body


def test_tool_uses_summary_body_and_param_docs() -> None:
    def forecast(city: str, days: int = 1) -> str:
        return city * days

    forecast.__doc__ = GOOGLE
    t = tools.Tool(forecast)
    assert t.description == f"Fetch the weather forecast.\n\n{BODY}"
    props: dict[str, Any] = t.parameters["properties"]
    assert props["city"]["description"] == "City name, in English."
    assert props["days"]["description"] == "How many days ahead."


def test_explicit_description_wins_and_no_docstring_means_none() -> None:
    def f(a: int) -> None:
        """Docstring summary.

        Args:
            a: The a.
        """

    def g(a: int) -> None: ...

    t = tools.Tool(f, description="Explicit.")
    assert t.description == "Explicit."
    assert t.parameters["properties"]["a"]["description"] == "The a."
    assert tools.Tool(g).description is None
    assert b"description" not in models.encode(tools.Tool(g).definition)
