"""Recipes: declarative YAML for a training run, validated against a strict schema.

Safe YAML only (no tags, no eval). Unknown keys, wrong types and out-of-range values are
refused with one line per problem naming the key and the fix; ``sparsify validate`` lists
them all at once. A list of lambdas in one penalty makes a sweep (one run per value).
"""

from __future__ import annotations

import difflib
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sparsify.errors import SparsifyError

RECIPE_VERSION = 1
NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


ZOO_NAMES = ("lecture_convnet", "lenet300_100", "lenet5")  # sparsify.models.MODELS (test-checked)


class ModelSpec(_Section):
    """Which network: a zoo name or ``torchvision:<classifier>``."""

    name: str = "lecture_convnet"
    num_classes: int = Field(10, ge=2, le=100_000)
    in_channels: int = Field(1, ge=1, le=64)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in ZOO_NAMES and not (
            name.startswith("torchvision:") and len(name) > len("torchvision:")
        ):
            raise ValueError(
                f"is not a known model; choose one of {', '.join(ZOO_NAMES)} or 'torchvision:<classifier>'"
            )
        return name


class DataSpec(_Section):
    """MNIST, the first ``train_subset``/``test_subset`` images (null = all)."""

    dataset: Literal["mnist"] = "mnist"
    dir: str | None = None
    train_subset: int | None = Field(None, ge=1, le=60_000)
    test_subset: int | None = Field(None, ge=1, le=10_000)


class OptimizerSpec(_Section):
    """A torch.optim optimizer and an optional LR schedule over all steps."""

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: Positive = 0.1
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: NonNeg = 0.0
    betas: list[Annotated[float, Field(ge=0, lt=1)]] = Field(
        [0.9, 0.999], min_length=2, max_length=2
    )
    lr_schedule: Literal["constant", "cosine"] = "constant"


class ScheduleSpec(_Section):
    """Lambda schedule: constant, or linear warm-up over ``length`` ``unit``s."""

    kind: Literal["constant", "linear_warmup"] = "constant"
    length: NonNeg = 0
    unit: Literal["steps", "epochs"] = "steps"


class GroupSpec(_Section):
    """Parameters whose name matches ``pattern`` (regex) get their own ``lam``."""

    pattern: str
    lam: NonNeg


class PenaltySpec(_Section):
    """One penalty. ``lam`` may be a list: the recipe is then a sweep over it."""

    kind: Literal["l1_prox", "l1_subgradient", "l2_coupled", "weight_decay"]
    lam: NonNeg | list[NonNeg]
    threshold: Literal["lambda", "lr_lambda"] | None = None
    scope: Literal["prunable", "all"] = "prunable"
    include: list[str] = []
    exclude: list[str] = []
    groups: list[GroupSpec] = []
    schedule: ScheduleSpec = ScheduleSpec()

    @field_validator("include", "exclude")
    @classmethod
    def _regex(cls, patterns: list[str]) -> list[str]:
        for p in patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"{p!r} is not a valid regular expression ({exc})") from None
        return patterns

    @field_validator("lam")
    @classmethod
    def _nonempty(cls, lam: float | list[float]) -> float | list[float]:
        if isinstance(lam, list) and not lam:
            raise ValueError("an empty lambda list runs nothing; give at least one value")
        return lam

    @model_validator(mode="after")
    def _threshold_applies(self) -> PenaltySpec:
        if self.threshold is not None and self.kind in ("l1_subgradient", "l2_coupled"):
            raise ValueError(
                f"'threshold' applies to l1_prox and weight_decay, not {self.kind}; remove it"
            )
        return self

    def to_config_dict(self) -> dict[str, Any]:
        """Fields for :func:`sparsify.train.penalty_from_dict` (``lam`` must be a scalar here)."""
        d = self.model_dump(exclude_none=True)
        if isinstance(d["lam"], list):
            raise SparsifyError("a sweep recipe must be expanded (Recipe.expand) before training.")
        return d


class OutputSpec(_Section):
    """Where ``sparsify train`` writes when ``--out`` is not given."""

    dir: str = "runs/default"


class Recipe(_Section):
    """A whole training run. See ``recipes/`` for commented examples."""

    version: Literal[1] = RECIPE_VERSION
    name: str = "run"
    seed: int = Field(0, ge=0, le=2**32 - 1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1, le=1024)
    model: ModelSpec = ModelSpec()
    data: DataSpec = DataSpec()
    optimizer: OptimizerSpec = OptimizerSpec()
    epochs: int = Field(10, ge=1, le=100_000)
    batch_size: int = Field(100, ge=1, le=1_000_000)
    penalties: list[PenaltySpec] = []
    output: OutputSpec = OutputSpec()

    @model_validator(mode="after")
    def _one_sweep(self) -> Recipe:
        lists = [i for i, p in enumerate(self.penalties) if isinstance(p.lam, list)]
        if len(lists) > 1:
            raise ValueError(
                f"penalties {lists} all give lambda lists; a sweep varies one penalty, so keep one list"
            )
        return self

    def sweep(self) -> tuple[int, list[float]] | None:
        """``(penalty index, lambdas)`` if this recipe is a sweep, else None."""
        for i, p in enumerate(self.penalties):
            if isinstance(p.lam, list):
                return i, list(p.lam)
        return None

    def expand(self) -> list[Recipe]:
        """One recipe per lambda of the sweep (just ``[self]`` when there is none)."""
        sw = self.sweep()
        if sw is None:
            return [self]
        index, lams = sw
        runs = []
        for lam in lams:
            penalties = list(self.penalties)
            penalties[index] = penalties[index].model_copy(update={"lam": lam})
            runs.append(self.model_copy(update={"penalties": penalties}))
        return runs

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON/YAML-safe); ``Recipe.from_dict(r.to_dict()) == r``."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Any, source: str = "recipe") -> Recipe:
        """Validate ``data``; raise SparsifyError listing every problem (one line each)."""
        problems = validate_dict(data, source)
        if problems:
            raise SparsifyError(problems[0] if len(problems) == 1 else "; ".join(problems))
        return cls.model_validate(data)


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.1 demands ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    model: Any = Recipe
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ()) or (ann,)
        model = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            for a in args:  # list[Spec]
                inner = next(
                    (
                        x
                        for x in getattr(a, "__args__", ())
                        if isinstance(x, type) and issubclass(x, BaseModel)
                    ),
                    None,
                )
                if inner is not None:
                    model = inner
            if model is None:
                return []
    return list(getattr(model, "model_fields", {}))


def _message(err: dict[str, Any], source: str) -> str:
    loc = err["loc"]
    where = _where(loc)
    got = err.get("input")
    if err["type"] == "extra_forbidden":
        known = _known_keys(loc)
        hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
        fix = (
            f"did you mean '{hint[0]}'?" if hint else f"allowed keys: {', '.join(known) or 'none'}"
        )
        return f"{source}: unknown key '{where}'; remove it or fix the spelling ({fix})."
    if err["type"] == "missing":
        return f"{source}: required key '{where}' is missing; add it."
    msg = err["msg"].removeprefix("Value error, ").removeprefix("Input ")
    if isinstance(got, float) and not math.isfinite(got):
        msg = "must be a finite number"
    if isinstance(got, dict):
        if err["type"] == "value_error":  # a rule over a whole section: the message says it all
            return f"{source}: '{where}': {msg}."
        return f"{source}: '{where}' {msg}; got a mapping."
    shown = repr(got) if len(repr(got)) <= 80 else repr(got)[:77] + "..."
    return f"{source}: '{where}' {msg}; got {shown}."


def _merge(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the deepest error per location; join the branches of a union (``float | list``)."""
    locs = [tuple(p for p in e["loc"] if not _is_tag(p)) for e in errors]
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
            by_loc[loc] = {**err, "loc": loc}
    return list(by_loc.values())


def _is_tag(part: Any) -> bool:
    # pydantic inserts union branch names ("float", "list[...]", "constrained-float") in locs
    return isinstance(part, str) and (part in ("float", "int", "str") or "[" in part or "-" in part)


def validate_dict(data: Any, source: str = "recipe") -> list[str]:
    """Every problem with ``data`` as a recipe, one line each (empty list: valid)."""
    if not isinstance(data, dict):
        return [
            f"{source}: a recipe is a YAML mapping of keys (model, data, optimizer, ...); got {type(data).__name__}."
        ]
    try:
        Recipe.model_validate(data)
    except ValidationError as exc:
        seen, out = set(), []
        for err in _merge(exc.errors()):
            m = _message(err, source)
            if m not in seen:
                seen.add(m)
                out.append(m)
        return out
    return []


def parse_yaml(text: str, source: str = "recipe") -> Any:
    """Parse YAML with the safe loader; syntax errors become a one-line SparsifyError."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}" if mark else ""
        raise SparsifyError(
            f"{source}: YAML tag not allowed{where} ({exc.problem}); recipes hold plain data only."
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SparsifyError(
            f"{source}: YAML syntax error{where}: {problem}; fix the file."
        ) from None


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read and validate the recipe at ``path``."""
    path = Path(path)
    if not path.is_file():
        raise SparsifyError(
            f"recipe {path} does not exist; give the path to a .yaml recipe (see recipes/)."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SparsifyError(f"{path}: not UTF-8 text; a recipe is a YAML file.") from None
    return Recipe.from_dict(parse_yaml(text, str(path)), str(path))


def dump_recipe(recipe: Recipe) -> str:
    """YAML text of ``recipe`` (round-trips through :func:`parse_yaml` and ``Recipe.from_dict``)."""
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
