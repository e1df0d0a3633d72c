"""Example tools, registered on ``orchestrator.tools.default_registry`` when imported.

``tools.modules: [handlers]`` in config.yaml imports this package, which imports each module:

- ``clock``: the current time in a time zone, and converting a time between zones (sync).
- ``calculator``: arithmetic from an expression, with a small parser and never ``eval`` (sync).
- ``countries``: look-ups in a small in-memory table of countries (async).
"""

from handlers import calculator, clock, countries

__all__ = ["calculator", "clock", "countries"]
