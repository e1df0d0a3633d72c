"""The emulator's knobs: one frozen struct, and the CLI flags generated from it.

Each field carries its help text in ``Meta(description=...)`` so the flags of
``orchestrator emulator`` cannot drift from the struct. ``FaultSettings`` is the subset a single
run may override through its ``emulator_faults`` metadata.
"""

from __future__ import annotations

import argparse
import math
import types
import typing
from typing import Annotated, Any, Final, Literal, Union

import msgspec
from msgspec import Meta

from orchestrator import config, errors

__all__ = [
    "FAULT_KINDS",
    "EmulatorSettings",
    "FaultKind",
    "FaultSettings",
    "add_arguments",
    "replace",
    "settings_from_args",
]

Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
Seconds = Annotated[float, Meta(ge=0.0)]

#: The kinds of faults a response can get, in the order their probabilities are stacked.
FaultKind = Literal["429", "500", "503", "no_retry", "drop", "malformed", "slow"]
FAULT_KINDS: Final[tuple[FaultKind, ...]] = typing.get_args(FaultKind)


class FaultSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Seeded fault injection; each API request draws once against these probabilities.

    The response-fault probabilities (all but ``fault_stream_cut``) must add up to <= 1; a request
    gets at most one: 429 (``retry-after-ms``), 500, 503, 500 with ``x-should-retry: false``, a
    connection closed without an answer, a 200 carrying half its JSON body, or ``slow_delay``
    before a normal answer. A stream is cut after 1-3 events with ``fault_stream_cut``, and one
    of its first 1-3 events carries unreadable data with ``fault_stream_garble`` (separate
    draws). A faulted POST does not take effect, unless ``fault_after_apply``: then it does and
    only its answer is lost (or, for ``slow``, comes ``slow_delay`` late). A run's
    ``emulator_faults`` metadata (JSON of these fields, unset ones 0) replaces the global knobs
    for requests addressing that run and its streams.
    """

    fault_429: Annotated[Probability, Meta(description="P(429 with retry-after-ms)")] = 0.0
    fault_500: Annotated[Probability, Meta(description="P(500 server_error)")] = 0.0
    fault_503: Annotated[Probability, Meta(description="P(503 overloaded)")] = 0.0
    fault_no_retry: Annotated[
        Probability, Meta(description="P(500 carrying x-should-retry: false)")
    ] = 0.0
    fault_drop: Annotated[
        Probability, Meta(description="P(connection closed without a response)")
    ] = 0.0
    fault_malformed: Annotated[
        Probability, Meta(description="P(200 with a truncated JSON body)")
    ] = 0.0
    fault_slow: Annotated[Probability, Meta(description="P(response delayed by slow_delay)")] = 0.0
    fault_stream_cut: Annotated[
        Probability, Meta(description="P(an SSE stream is cut mid-way)")
    ] = 0.0
    fault_stream_garble: Annotated[
        Probability, Meta(description="P(an SSE event's data is unreadable)")
    ] = 0.0
    slow_delay: Annotated[Seconds, Meta(description="delay of a slow response, s")] = 1.0
    retry_after_ms: Annotated[int, Meta(ge=0, description="retry-after-ms of an injected 429")] = (
        100
    )
    fault_after_apply: Annotated[
        bool,
        Meta(description="faulted POSTs take effect before the response is lost"),
    ] = False

    def __post_init__(self) -> None:
        # Meta constraints only apply when decoding; constructing checks here too. NaN passes
        # every comparison below, so non-finite numbers are refused first.
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if isinstance(value, float) and not math.isfinite(value):
                raise errors.ConfigError(f"{name}: must be a finite number, got {value}")
        for kind in (*FAULT_KINDS, "stream_cut", "stream_garble"):
            p = getattr(self, f"fault_{kind}")
            if not 0.0 <= p <= 1.0:
                raise errors.ConfigError(f"fault_{kind}: must be within 0..1, got {p!r}")
        if self.slow_delay < 0 or self.retry_after_ms < 0:
            raise errors.ConfigError("slow_delay and retry_after_ms must be >= 0")
        total = sum(getattr(self, f"fault_{k}") for k in FAULT_KINDS)
        if total > 1.0 + 1e-9:
            raise errors.ConfigError(f"fault probabilities add up to {total:.3f} > 1")

    @property
    def any_response_fault(self) -> bool:
        """Some request may be faulted (a quick test for the hot path)."""
        return any(getattr(self, f"fault_{k}") > 0 for k in FAULT_KINDS)

    def fault_table(self) -> tuple[tuple[float, FaultKind], ...]:
        """Cumulative thresholds: one uniform draw picks at most one fault kind."""
        acc = 0.0
        table: list[tuple[float, FaultKind]] = []
        for kind in FAULT_KINDS:
            p = float(getattr(self, f"fault_{kind}"))
            if p > 0:
                acc += p
                table.append((acc, kind))
        return tuple(table)


class EmulatorSettings(FaultSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every knob of the emulator; pass overrides of these names to ``Emulator(...)``."""

    queue_delay: Annotated[Seconds, Meta(description="time a run stays queued, s")] = 0.05
    think_delay: Annotated[
        Seconds, Meta(description="time a run stays in_progress per round, s")
    ] = 0.1
    cancel_delay: Annotated[Seconds, Meta(description="time a run stays cancelling, s")] = 0.05
    run_ttl: Annotated[float, Meta(gt=0.0, description="expires_at = created_at + run_ttl, s")] = (
        600.0
    )
    poll_after_ms: Annotated[
        int | None, Meta(description="openai-poll-after-ms header (absent when unset)")
    ] = None
    require_api_key: Annotated[
        config.Secret | None, Meta(description="the one API key accepted (default: any)")
    ] = None
    body_timeout: Annotated[
        float, Meta(gt=0.0, description="time to receive a request body before a 408, s")
    ] = 30.0
    seed: Annotated[int, Meta(description="seed of faults and synthesised arguments")] = 0
    rate_limit_rps: Annotated[
        Annotated[float, Meta(gt=0.0)] | None,
        Meta(description="requests per second before 429s (unset: no limit)"),
    ] = None
    model: Annotated[str, Meta(description="model reported when none is given")] = "gpt-4o"
    foundry_token_ttl: Annotated[
        Annotated[float, Meta(gt=0.0)] | None,
        Meta(
            description="Foundry mode: lifetime of tokens from POST /_emulator/token, s "
            "(unset: any bearer token)"
        ),
    ] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("queue_delay", "think_delay", "cancel_delay"):
            if getattr(self, name) < 0:
                raise errors.ConfigError(f"{name}: must be >= 0")
        if not 0 < self.body_timeout < float("inf"):  # written so that NaN fails too
            raise errors.ConfigError(
                f"body_timeout: must be a positive number of seconds, got {self.body_timeout!r}"
            )
        if self.run_ttl <= 0 or (self.rate_limit_rps is not None and self.rate_limit_rps <= 0):
            raise errors.ConfigError("run_ttl and rate_limit_rps must be > 0")
        if self.foundry_token_ttl is not None and not self.foundry_token_ttl > 0:
            raise errors.ConfigError("foundry_token_ttl: must be > 0")
        key: object = self.require_api_key
        if isinstance(key, str):  # tolerate a plain string from callers; store it masked
            msgspec.structs.force_setattr(self, "require_api_key", config.Secret(key))

    def faults(self) -> FaultSettings:
        """The fault knobs alone."""
        names = msgspec.structs.fields(FaultSettings)
        return FaultSettings(**{f.name: getattr(self, f.name) for f in names})


def replace(settings: EmulatorSettings, **overrides: Any) -> EmulatorSettings:
    """``settings`` with some fields changed; unknown names raise ``ConfigError``."""
    known = {f.name for f in msgspec.structs.fields(EmulatorSettings)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise errors.ConfigError(f"unknown emulator settings: {', '.join(unknown)}")
    return msgspec.structs.replace(settings, **overrides)


# --- command line ------------------------------------------------------------------------------


def _unwrap(tp: Any) -> tuple[Any, str]:
    """(base type, description) of a field type: ``Annotated`` and ``X | None`` peeled off."""
    description = ""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp, *extras = typing.get_args(tp)
            for meta in extras:
                if isinstance(meta, Meta) and meta.description:
                    description = description or meta.description
        elif origin in (Union, types.UnionType):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        else:
            return tp, description


def _finite(text: str) -> float:
    """An argparse type: a finite float (``nan`` and ``inf`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--flag`` per ``EmulatorSettings`` field (``--host``/``--port`` are the CLI's)."""
    hints = typing.get_type_hints(EmulatorSettings, include_extras=True)
    group = parser.add_argument_group("emulator settings")
    for field in msgspec.structs.fields(EmulatorSettings):
        base, description = _unwrap(hints[field.name])
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        shown = "unset" if default is None else default
        help_text = f"{description} (default: {shown})"
        if base is bool:
            group.add_argument(
                flag,
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=default,
                help=help_text,
            )
            continue
        conv = str if base is config.Secret else _finite if base is float else base
        metavar = "KEY" if base is config.Secret else field.name.upper()
        if base is config.Secret:
            help_text = f"{description}; visible to other local users in the process list"
        group.add_argument(
            flag, dest=field.name, type=conv, default=default, help=help_text, metavar=metavar
        )


def settings_from_args(args: argparse.Namespace) -> EmulatorSettings:
    """The settings given by the flags that ``add_arguments`` added."""
    values: dict[str, Any] = {}
    for field in msgspec.structs.fields(EmulatorSettings):
        if hasattr(args, field.name):
            values[field.name] = getattr(args, field.name)
    return EmulatorSettings(**values)
