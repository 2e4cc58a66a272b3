"""pydantic validation errors -> one line per problem, naming the key and the fix.

pydantic reports union branches inside error locations (``lam.float``, ``lam.list[float]``,
``stages.0.debias.epochs``); users wrote neither. This module strips those tags, keeps the
deepest error per key, joins the branches of one union ("should be a number or a list")
and words each problem as ``source: 'key' <what is wrong>; <the fix>.``.

It receives the root model (and the tagged unions, by field name) instead of importing the
recipe schema, so the schema can import it without a cycle. The tag regex below reads
pydantic's internal branch names: tests/test_malformed_recipes.py fuzzes it, so a pydantic
upgrade that renames branches fails there, not in a user's terminal.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

Tagged = Mapping[str, Mapping[str, type[BaseModel]]]


def problems(root: type[BaseModel], data: Any, source: str, tagged: Tagged) -> list[str]:
    """Every problem with ``data`` as a ``root``, one line each (empty list: valid).

    ``tagged`` maps a list field of ``root`` whose items are a union discriminated by ``kind``
    to ``{kind: model}`` (``{"stages": STAGE_TYPES}``): pydantic puts the kind in the location.
    """
    try:
        root.model_validate(data)
    except ValidationError as exc:
        seen, out = set(), []
        for err in _merge(exc.errors(), tagged):
            m = _message(err, source, root, tagged)
            if m not in seen:
                seen.add(m)
                out.append(m)
        return out
    return []


def printable(text: str, limit: int = 80) -> str:
    """``text`` safe to print on one terminal line: control characters (newlines, escape
    sequences) shown as Python escapes, and cut to ``limit`` characters."""
    out = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    return out if len(out) <= limit else out[: limit - 3] + "..."


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        part = part if isinstance(part, int) else printable(str(part))
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside ``Spec``, ``Spec | None`` or ``list[Spec]``, if any."""
    args = getattr(annotation, "__args__", ()) or (annotation,)
    for a in args:
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    for a in args:
        inner = next(
            (
                x
                for x in getattr(a, "__args__", ())
                if isinstance(x, type) and issubclass(x, BaseModel)
            ),
            None,
        )
        if inner is not None:
            return inner
    return None


def _known_keys(loc: tuple[Any, ...], root: type[BaseModel], tagged: Tagged) -> list[str]:
    """Keys allowed at ``loc`` (an error location that still holds union tags)."""
    model: Any = root
    union: Mapping[str, type[BaseModel]] | None = None  # set right after a tagged list field
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if union is not None:  # the part after ``stages[i]`` is the item's kind
            model, union = union.get(part), None
            if model is None:
                return []
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        if model is root and part in tagged:
            union = tagged[part]
            continue
        model = _model_of(field.annotation)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _message(err: dict[str, Any], source: str, root: type[BaseModel], tagged: Tagged) -> str:
    loc = err["loc"]
    where = _where(loc)
    got = err.get("input")
    if err["type"] == "extra_forbidden":
        known = _known_keys(err.get("raw_loc", loc), root, tagged)
        hint = difflib.get_close_matches(printable(str(loc[-1])), known, n=1) if loc else []
        fix = (
            f"did you mean '{hint[0]}'?" if hint else f"allowed keys: {', '.join(known) or 'none'}"
        )
        return f"{source}: unknown key '{where}'; remove it or fix the spelling ({fix})."
    if err["type"] == "missing":
        return f"{source}: required key '{where}' is missing; add it."
    if err["type"] == "recipe_rule":  # a rule over several keys: the message says it all
        return f"{source}: '{where}': {err['msg']}."
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        kinds = ", ".join(next(iter(tagged.values()), {}))
        if err["type"] == "union_tag_not_found":
            return f"{source}: required key '{where}.kind' is missing; add it ({kinds})."
        tag = err.get("ctx", {}).get("tag")
        return f"{source}: '{where}.kind' should be one of {kinds}; got {tag!r}."
    msg = err["msg"].removeprefix("Value error, ").removeprefix("Input ")
    if isinstance(got, float) and not math.isfinite(got):
        msg = "must be a finite number"
    elif err["type"] == "less_than_equal" and err.get("ctx", {}).get("le", 0) > 1e30:
        msg = "must fit float32 (at most 3.4e38; training computes in float32)"
    if isinstance(got, dict):
        if err["type"] == "value_error":  # a rule over a whole section: the message says it all
            return f"{source}: '{where}': {msg}."
        return f"{source}: '{where}' {msg}; got a mapping."
    shown = repr(got) if len(repr(got)) <= 80 else repr(got)[:77] + "..."
    return f"{source}: '{where}' {msg}; got {shown}."


def _merge(errors: list[dict[str, Any]], tagged: Tagged) -> list[dict[str, Any]]:
    """Keep the deepest error per location; join the branches of a union (``float | list``)."""
    locs = [_strip_tags(e["loc"], tagged) for e in errors]
    by_loc: dict[tuple[Any, ...], dict[str, Any]] = {}
    for loc, err in zip(locs, errors):
        if any(other[: len(loc)] == loc and len(other) > len(loc) for other in locs):
            continue  # a more precise error lies below this one
        if loc in by_loc and err["type"] not in ("extra_forbidden", "missing"):
            prev = by_loc[loc]
            by_loc[loc] = {
                **prev,
                "msg": prev["msg"] + " or " + err["msg"].removeprefix("Input should be "),
            }
        else:
            by_loc[loc] = {**err, "loc": loc, "raw_loc": err["loc"]}
    return list(by_loc.values())


def _strip_tags(loc: tuple[Any, ...], tagged: Tagged) -> tuple[Any, ...]:
    """``loc`` without pydantic's union branch names (and the item kind after ``stages[i]``)."""
    out: list[Any] = []
    for i, part in enumerate(loc):
        if _is_tag(part):
            continue
        if (
            i >= 2
            and loc[i - 2] in tagged
            and isinstance(loc[i - 1], int)
            and part in tagged[loc[i - 2]]
        ):
            continue
        out.append(part)
    return tuple(out)


_TAG = re.compile(
    r"(float|int|str|bool)|\w+\[.*\]|(constrained|function|json-or-python)-[\w-]+(\[.*\])?"
)


def _is_tag(part: Any) -> bool:
    # pydantic inserts union branch names ("float", "list[...]", "constrained-float") in locs;
    # a user's own key such as "-" or "learning-rate" is not one
    return isinstance(part, str) and _TAG.fullmatch(part) is not None
