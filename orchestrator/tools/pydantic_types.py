"""Pydantic models as tool parameters and results, when pydantic is installed.

msgspec describes, decodes and encodes everything else; these are its hooks for
``pydantic.BaseModel`` subclasses. Nothing here imports pydantic: a function annotated with a
model has imported it already, so the hooks look it up in ``sys.modules`` and cost nothing to
projects without it.
"""

from __future__ import annotations

import sys
from typing import Any

from orchestrator.tools import schema_rewrite

__all__ = ["dec_hook", "enc_hook", "model_class", "schema_hook"]

_ROOT = "__pydantic_root__"


def model_class(tp: object) -> Any:
    """``tp`` when it is a pydantic model class, else None."""
    pydantic = sys.modules.get("pydantic")
    if pydantic is None or not isinstance(tp, type):
        return None
    return tp if issubclass(tp, pydantic.BaseModel) else None


def schema_hook(tp: type) -> dict[str, Any]:
    """A model's JSON Schema, self-contained (msgspec calls this for types it does not know)."""
    model = model_class(tp)
    if model is None:
        raise NotImplementedError
    body: dict[str, Any] = model.model_json_schema(ref_template="#/$defs/{model}")
    defs: dict[str, Any] = body.pop("$defs", {})
    return schema_rewrite.inline({**defs, _ROOT: body}, _ROOT)


def dec_hook(tp: type, obj: Any) -> Any:
    """Validate decoded JSON into a model; failures become msgspec ``ValidationError``s."""
    model = model_class(tp)
    if model is None:
        raise TypeError(f"cannot decode {tp!r}")
    pydantic = sys.modules["pydantic"]
    try:
        return model.model_validate(obj)
    except pydantic.ValidationError as exc:
        # msgspec adds the path to the parameter; pydantic's own text spans lines and links
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or model.__name__}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise ValueError(problems) from None


def enc_hook(obj: Any) -> Any:
    """A model instance as JSON-ready data (msgspec calls this for values it does not know)."""
    if model_class(type(obj)) is None:
        raise TypeError(f"cannot encode {type(obj).__name__} objects")
    return obj.model_dump(mode="json")
