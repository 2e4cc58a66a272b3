"""Recipes: declarative YAML for a training run, validated against a strict schema.

Safe YAML only (no tags, no eval). Unknown keys, wrong types and out-of-range values are
refused with one line per problem naming the key and the fix; ``sparsify validate`` lists
them all at once. A list of lambdas in one penalty makes a sweep (one run per value).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from sparsify.errors import SparsifyError
from sparsify.pipeline.recipe_errors import problems

RECIPE_VERSION = 1
# training runs in float32: a larger value (lr: 1e308) becomes inf at its first use
FLOAT32_MAX = 3.4028234663852886e38
NonNeg = Annotated[float, Field(ge=0, le=FLOAT32_MAX, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, le=FLOAT32_MAX, allow_inf_nan=False)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ModelSpec(_Section):
    """Which network: a name in the model registry (:mod:`sparsify.pipeline.zoo`): a built-in,
    ``torchvision:<classifier>``, or one registered with ``sparsify.register_model``.

    ``init``: a sparsify checkpoint (run directory or its ``model.safetensors``) whose weights
    the model starts from instead of a random initialisation (train-then-compress); a
    ``{seed}`` in it becomes the recipe's seed, so a seed sweep starts each run from its own
    dense run.
    """

    name: str = "lecture_convnet"
    num_classes: int = Field(10, ge=2, le=100_000)
    in_channels: int = Field(1, ge=1, le=64)
    init: str | None = Field(None, min_length=1, max_length=4096)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        from sparsify.pipeline import zoo  # lazy: importing the schema imports no torch

        if not zoo.is_known(name):
            # printed as "<source>: 'model.name' <this>; got '<name>'."
            raise ValueError(zoo.unknown_model_message(name, subject="is not"))
        return name


class DataSpec(_Section):
    """Which data: a registered dataset, a folder, subsets, a validation split, augmentation.

    ``dataset`` is a name from :mod:`sparsify.pipeline.data.registry` (built-in: mnist,
    fashion_mnist, kmnist, emnist, cifar10, cifar100, svhn, image_folder; users register
    more). ``dir``: the dataset's folder (``--data-dir`` overrides it; null: the cache
    ``~/.cache/sparsify/<name>``, downloaded when online; image_folder needs it). ``split``:
    the dataset's variant (emnist: balanced, byclass, bymerge, digits, letters, mnist).
    ``val_size`` items (or ``val_fraction`` of the training subset) are carved out of the
    training set as a validation split, chosen by the recipe's seed. ``augment``: the
    dataset's standard training augmentation (crop + flip for natural images; none for the
    MNIST family). ``image_size``: [H, W] images are resized to (image_folder).
    """

    dataset: str = "mnist"
    dir: str | None = None
    split: str | None = None
    train_subset: int | None = Field(None, ge=1, le=100_000_000)
    test_subset: int | None = Field(None, ge=1, le=100_000_000)
    val_size: int = Field(0, ge=0, le=100_000_000)
    val_fraction: float = Field(0.0, ge=0, lt=1)
    augment: bool = False
    num_workers: int = Field(0, ge=0, le=256)
    image_size: list[Annotated[int, Field(ge=1, le=65_536)]] | None = None

    @field_validator("image_size")
    @classmethod
    def _two_sizes(cls, size: list[int] | None) -> list[int] | None:
        if size is not None and len(size) != 2:
            raise ValueError("must be [H, W], two sizes in pixels")
        return size

    @field_validator("dataset")
    @classmethod
    def _registered(cls, name: str) -> str:
        from sparsify.pipeline.data.registry import dataset_names

        if name not in dataset_names():
            raise PydanticCustomError(
                "recipe_rule",
                f"unknown dataset {name!r}; choose one of {', '.join(dataset_names())}; "
                "register your own with sparsify.register_dataset",
            )
        return name

    @model_validator(mode="after")
    def _one_val(self) -> DataSpec:
        if self.val_size and self.val_fraction:
            raise ValueError("give either val_size or val_fraction, not both")
        return self


# keys added to ``data`` after version 1 shipped: left out of to_dict() while at their default
DATA_KEYS_ADDED = {
    "split": None,
    "val_size": 0,
    "val_fraction": 0.0,
    "augment": False,
    "num_workers": 0,
    "image_size": None,
}


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
    """Parameters whose name matches ``pattern`` (regex) get their own lambda.

    Either ``lam`` (absolute) or ``scale`` (relative: ``scale * penalty lam``, so a sweep
    over the penalty's ``lam`` moves every group with it and ``lam: 0`` is the dense run).
    """

    pattern: str
    lam: NonNeg | None = None
    scale: NonNeg | None = None

    @field_validator("pattern")
    @classmethod
    def _regex(cls, pattern: str) -> str:
        return _check_regexes([pattern])[0]

    @model_validator(mode="after")
    def _one_of(self) -> GroupSpec:
        if (self.lam is None) == (self.scale is None):
            raise PydanticCustomError(
                "recipe_rule",
                "give either 'lam' (absolute) or 'scale' (times the penalty's lam), not "
                + ("both" if self.lam is not None else "neither"),
            )
        return self

    def resolve(self, lam: float) -> float:
        """This group's lambda when the penalty's is ``lam``."""
        return self.lam if self.lam is not None else self.scale * lam  # type: ignore[operator]


PENALTY_KINDS = (
    "l1_prox",
    "l1_subgradient",
    "l2_coupled",
    "weight_decay",
    "group_lasso_prox",
    "sparse_group_lasso_prox",
    "nm_projection",
    "max_norm",
    "variational_dropout",
)
PROJECTION_KINDS = ("nm_projection", "max_norm")  # lam only switches these on
GROUP_KINDS = ("group_lasso_prox", "sparse_group_lasso_prox")
THRESHOLD_KINDS = ("l1_prox", "weight_decay", *GROUP_KINDS)
# kind-specific fields: (field, kinds it applies to); None in a recipe means "not given"
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "size_scaled": GROUP_KINDS,
    "lam_l1": ("sparse_group_lasso_prox",),
    "n": ("nm_projection",),
    "m": ("nm_projection",),
    "radius": ("max_norm",),
    "per": ("max_norm",),
}


def _kinds(kinds: tuple[str, ...]) -> str:
    return ", ".join(kinds[:-1]) + " and " + kinds[-1] if len(kinds) > 1 else kinds[0]


class PenaltySpec(_Section):
    """One penalty. ``lam`` may be a list: the recipe is then a sweep over it.

    ``lam`` is required except for the projections ``nm_projection`` and ``max_norm`` (a
    projection has no strength; 1.0 switches it on). ``size_scaled`` (group kinds), ``lam_l1``
    (sparse-group lasso), ``n``/``m`` (N:M) and ``radius``/``per`` (max-norm) are refused on
    other kinds; left out they take the config defaults (False, 0, 2, 4, 1.0, "in").
    """

    kind: Literal[PENALTY_KINDS]  # type: ignore[valid-type]
    lam: NonNeg | list[NonNeg]
    threshold: Literal["lambda", "lr_lambda", "optimizer"] | None = None
    scope: Literal["prunable", "all"] = "prunable"
    include: list[str] = []
    exclude: list[str] = []
    groups: list[GroupSpec] = []
    schedule: ScheduleSpec = ScheduleSpec()
    size_scaled: bool | None = None
    lam_l1: NonNeg | None = None
    n: int | None = Field(None, ge=1, le=1024)
    m: int | None = Field(None, ge=1, le=1024)
    radius: float | None = Field(None, gt=0, allow_inf_nan=False)
    per: Literal["in", "out"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _projection_lam(cls, data: Any) -> Any:
        # a projection's lam only switches the hook on; every other kind must say its strength
        if isinstance(data, dict) and data.get("kind") in PROJECTION_KINDS and "lam" not in data:
            return {**data, "lam": 1.0}
        return data

    @field_validator("include", "exclude")
    @classmethod
    def _regex(cls, patterns: list[str]) -> list[str]:
        return _check_regexes(patterns)

    @field_validator("lam")
    @classmethod
    def _nonempty(cls, lam: float | list[float]) -> float | list[float]:
        if isinstance(lam, list) and not lam:
            raise ValueError("an empty lambda list runs nothing; give at least one value")
        return lam

    @model_validator(mode="after")
    def _threshold_applies(self) -> PenaltySpec:
        if self.threshold is not None and self.kind not in THRESHOLD_KINDS:
            raise ValueError(
                f"'threshold' applies to l1_prox and weight_decay and the group-lasso prox kinds, "
                f"not {self.kind}; remove it"
            )
        if self.threshold == "optimizer" and self.kind != "l1_prox":
            raise ValueError(
                f"threshold 'optimizer' applies to l1_prox only (a group prox has no closed form "
                f"in Adam's diagonal metric), not {self.kind}; use 'lr_lambda'"
            )
        for name, kinds in KIND_FIELDS.items():
            if getattr(self, name) is not None and self.kind not in kinds:
                raise ValueError(f"'{name}' applies to {_kinds(kinds)}, not {self.kind}; remove it")
        if self.kind in (*GROUP_KINDS, *PROJECTION_KINDS, "variational_dropout") and (
            self.scope != "prunable"
        ):
            raise ValueError(
                f"{self.kind} needs scope 'prunable' (it acts on Linear/Conv weights, not biases); remove 'scope'"
            )
        if self.kind == "nm_projection" and (self.n or 2) > (self.m or 4):
            raise ValueError(
                f"nm_projection needs n <= m; got n={self.n or 2}, m={self.m or 4} (2:4 is n: 2, m: 4)"
            )
        lams = self.lam if isinstance(self.lam, list) else [self.lam]
        if self.kind == "sparse_group_lasso_prox" and (self.lam_l1 or 0) > 0 and 0 in lams:
            raise ValueError(
                "sparse_group_lasso_prox needs lam > 0 when lam_l1 > 0 (its L1 term scales with "
                "lam); drop lam 0 or use kind l1_prox"
            )
        return self

    def to_config_dict(self) -> dict[str, Any]:
        """Fields for :func:`sparsify.penalties.penalty_from_dict` (``lam`` must be a scalar here)."""
        d = self.model_dump(exclude_none=True)
        if isinstance(d["lam"], list):
            raise SparsifyError("a sweep recipe must be expanded (Recipe.expand) before training.")
        d["groups"] = [{"pattern": g.pattern, "lam": g.resolve(d["lam"])} for g in self.groups]
        return d


def _check_regexes(patterns: list[str]) -> list[str]:
    for p in patterns:
        try:
            re.compile(p)
        except re.error as exc:
            raise ValueError(f"{p!r} is not a valid regular expression ({exc})") from None
    return patterns


SPARSITY_METHODS = ("prox", "magnitude")
# method-specific sparsity fields: (field, methods it applies to); None means "not given"
METHOD_FIELDS: dict[str, tuple[str, ...]] = {
    "schedule": ("magnitude",),
    "start": ("magnitude",),
    "end": ("magnitude",),
    "every": ("magnitude",),
    "control": ("prox",),
}


class SparsitySpec(_Section):
    """A sparsity target, reached exactly at the end of the train stage, and how.

    ``target``: the fraction of zeros among the selected weights (Linear/Conv weights,
    narrowed by ``include``/``exclude`` regexes), over all of them (``granularity: global``,
    one magnitude threshold) or in each tensor (``layer``). At the end of the train stage the
    smallest-|w| selected weights are set to 0 until exactly ``round(target * N)`` are zero
    (``prune_to_sparsity_``); a debias stage then fine-tunes the survivors with those zeros
    frozen. ``method``:

    prox       the recipe's penalties train (``control: true`` rescales their lambdas after
               each epoch towards a cubic sparsity ramp ending at the target, so little is
               left for the projection); then the projection
    magnitude  magnitude pruning: ``schedule: oneshot`` (default) prunes once at the end of
               the train stage (train dense, prune, fine-tune); ``gradual`` prunes along Zhu &
               Gupta's cubic schedule from epoch ``start`` to ``end`` every ``every`` epochs
               (``GradualPruning``), pruned weights held at 0
    """

    target: float = Field(gt=0, lt=1, allow_inf_nan=False)
    granularity: Literal["global", "layer"] = "global"
    method: Literal[SPARSITY_METHODS] = "prox"  # type: ignore[valid-type]
    include: list[str] = []
    exclude: list[str] = []
    schedule: Literal["oneshot", "gradual"] | None = None
    start: NonNeg | None = None
    end: NonNeg | None = None
    every: Positive | None = None
    control: bool | None = None

    @field_validator("include", "exclude")
    @classmethod
    def _regex(cls, patterns: list[str]) -> list[str]:
        return _check_regexes(patterns)

    @model_validator(mode="after")
    def _fields_apply(self) -> SparsitySpec:
        for name, methods in METHOD_FIELDS.items():
            if getattr(self, name) is not None and self.method not in methods:
                raise ValueError(
                    f"'{name}' applies to method {_kinds(methods)}, not {self.method}; remove it"
                )
        if self.schedule != "gradual":
            for name in ("start", "end", "every"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"'{name}' applies to schedule 'gradual' only (oneshot prunes at the end "
                        "of the train stage); remove it or set schedule: gradual"
                    )
        elif self.end is None:
            raise ValueError("schedule 'gradual' needs 'end', the epoch pruning reaches the target")
        elif self.end < (self.start or 0):
            raise ValueError(
                f"schedule 'gradual' needs start <= end; got start={self.start or 0:g}, "
                f"end={self.end:g}"
            )
        return self

    def pruning(self) -> dict[str, Any] | None:
        """Fields for ``GradualPruning`` (in epochs) when this is gradual magnitude pruning."""
        if self.schedule != "gradual":
            return None
        return {
            "sparsity": self.target,
            "start": self.start or 0,
            "end": self.end,
            "every": self.every or 1,
            "granularity": self.granularity,
            "unit": "epochs",
        }


class DistillSpec(_Section):
    """Distillation (:mod:`sparsify.pipeline.distill`) from one of two teachers:

    from_epoch  the model itself as it is after train epoch ``from_epoch`` (self-distillation;
                with gradual magnitude pruning starting there, the dense network at no extra
                epoch); it teaches every later step of the train and debias stages
    teacher     a sparsify checkpoint (run directory or ``model.safetensors``, any registered
                architecture with the same classes; ``{seed}`` becomes the recipe's seed); it
                teaches every step of the train and debias stages

    Loss per item: ``(1 - weight) * CE + weight * temperature^2 * KL(teacher || student)`` at
    ``temperature``. Classification only.
    """

    from_epoch: int | None = Field(None, ge=1, le=100_000)
    teacher: str | None = Field(None, min_length=1, max_length=4096)
    weight: float = Field(0.5, gt=0, le=1, allow_inf_nan=False)
    temperature: Positive = 4.0

    @model_validator(mode="after")
    def _one_teacher(self) -> DistillSpec:
        if (self.from_epoch is None) == (self.teacher is None):
            raise ValueError(
                "give exactly one of 'from_epoch' (the model teaches itself from that epoch) "
                "and 'teacher' (a checkpoint)"
            )
        return self


class OutputSpec(_Section):
    """Where ``sparsify train`` writes when ``--out`` is not given."""

    dir: str = "runs/default"


class TrainStage(_Section):
    """Penalised training: the recipe's top-level ``epochs``, ``optimizer`` and ``penalties``."""

    kind: Literal["train"]
    name: str = Field("train", min_length=1, max_length=64)


class DebiasStage(_Section):
    """Fine-tune without penalties, zeros frozen (``freeze_support_``) for ``epochs`` epochs.

    ``scope``/``include``/``exclude`` pick the weights whose zeros are frozen (the penalties'
    selection rule); the others train freely. ``optimizer`` null: the train stage's one.
    """

    kind: Literal["debias"]
    name: str = Field("debias", min_length=1, max_length=64)
    epochs: int = Field(ge=1, le=100_000)
    optimizer: OptimizerSpec | None = None
    scope: Literal["prunable", "all"] = "prunable"
    include: list[str] = []
    exclude: list[str] = []

    @field_validator("include", "exclude")
    @classmethod
    def _regex(cls, patterns: list[str]) -> list[str]:
        return _check_regexes(patterns)


class ShrinkStage(_Section):
    """Remove dead output neurons/channels (``shrink_``); same function within 1e-5.

    ``exclude``: regexes on layer names whose output units are kept even when dead.
    ``example_batch``: random inputs of the data's image shape used to read the graph and
    check equivalence.
    """

    kind: Literal["shrink"]
    name: str = Field("shrink", min_length=1, max_length=64)
    exclude: list[str] = []
    example_batch: int = Field(64, ge=1, le=4096)

    @field_validator("exclude")
    @classmethod
    def _regex(cls, patterns: list[str]) -> list[str]:
        return _check_regexes(patterns)


STAGE_TYPES: dict[str, type[BaseModel]] = {
    "train": TrainStage,
    "debias": DebiasStage,
    "shrink": ShrinkStage,
}
StageSpec = Annotated[TrainStage | DebiasStage | ShrinkStage, Field(discriminator="kind")]
STAGE_ORDER = ("train", "debias", "shrink")  # each at most once, in this order


def _check_stages(stages: list[Any]) -> list[Any]:
    """Order rule: ``train`` first, then optionally ``debias``, then optionally ``shrink``."""
    if not stages:
        return stages
    kinds = [st.kind for st in stages]
    if kinds[0] != "train":
        raise PydanticCustomError(
            "recipe_rule",
            "the first stage must be {kind: train} (it runs the recipe's epochs, optimizer and "
            "penalties); add it first",
        )
    for i, k in enumerate(kinds):
        if kinds.index(k) != i:
            raise PydanticCustomError(
                "recipe_rule", f"stage {i} repeats kind '{k}'; give each kind at most once"
            )
    order = [STAGE_ORDER.index(k) for k in kinds]
    if order != sorted(order):
        raise PydanticCustomError(
            "recipe_rule",
            f"stages run in the order train, debias, shrink; got {', '.join(kinds)}; reorder them",
        )
    names = [st.name for st in stages]
    dup = next((n for i, n in enumerate(names) if names.index(n) != i), None)
    if dup is not None:
        raise PydanticCustomError(
            "recipe_rule", f"two stages are named '{dup}'; give each stage its own name"
        )
    return stages


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
    stages: list[StageSpec] = []  # empty: one train stage (the recipe before stages existed)
    sparsity: SparsitySpec | None = None  # None: no target (zeros are what the penalties leave)
    distill: DistillSpec | None = None  # None: the task's loss alone
    output: OutputSpec = OutputSpec()

    @field_validator("stages")
    @classmethod
    def _stage_order(cls, stages: list[Any]) -> list[Any]:
        return _check_stages(stages)

    @model_validator(mode="after")
    def _one_sweep(self) -> Recipe:
        lists = [i for i, p in enumerate(self.penalties) if isinstance(p.lam, list)]
        if len(lists) > 1:
            raise ValueError(
                f"penalties {lists} all give lambda lists; a sweep varies one penalty, so keep one list"
            )
        return self

    @model_validator(mode="after")
    def _sparsity_fits(self) -> Recipe:
        sp = self.sparsity
        if sp is not None and sp.end is not None and sp.end > self.epochs:
            raise PydanticCustomError(
                "recipe_rule",
                f"sparsity.end ({sp.end:g}) is past the train stage's {self.epochs} epochs; "
                "lower it or raise epochs",
            )
        for i, p in enumerate(self.penalties):
            ramp = p.schedule
            if ramp.kind == "linear_warmup" and ramp.unit == "epochs" and ramp.length > self.epochs:
                # the ramp would end after training: lambda never reaches the value the recipe says
                raise PydanticCustomError(
                    "recipe_rule",
                    f"penalties[{i}].schedule.length ({ramp.length:g} epochs) is past the train "
                    f"stage's {self.epochs} epochs, so lambda would never reach {p.lam}; lower it "
                    "or raise epochs",
                )
        if sp is not None and sp.method == "prox" and not self.penalties:
            raise PydanticCustomError(
                "recipe_rule",
                "sparsity method 'prox' needs a penalty (e.g. l1_prox) to train with; add one "
                "or use method: magnitude",
            )
        if (
            sp is not None
            and sp.control
            and any(p.kind == "variational_dropout" for p in self.penalties)
        ):
            raise PydanticCustomError(
                "recipe_rule",
                "sparsity.control steers lambda by the zeros after each epoch, and variational "
                "dropout zeroes its weights only when the train stage ends; remove control and "
                "set lam (1 / N training items is the variational bound)",
            )
        debias = next((st for st in self.stages if isinstance(st, DebiasStage)), None)
        if (
            sp is not None
            and debias is not None
            and (debias.include or debias.exclude)
            and (debias.include, debias.exclude) != (sp.include, sp.exclude)
        ):
            raise PydanticCustomError(
                "recipe_rule",
                "the debias stage must freeze every weight the sparsity target counts; give it "
                "the same include/exclude as 'sparsity' or none",
            )
        return self

    @model_validator(mode="after")
    def _distill_fits(self) -> Recipe:
        start = None if self.distill is None else self.distill.from_epoch
        if start is not None and start >= self.epochs:
            raise PydanticCustomError(
                "recipe_rule",
                f"distill.from_epoch ({self.distill.from_epoch}) must be below the train stage's "
                f"{self.epochs} epochs (the teacher is copied after that epoch); lower it",
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
        """Plain data (JSON/YAML-safe); ``Recipe.from_dict(r.to_dict()) == r``.

        Keys added after version 1 shipped (``stages`` when empty, kind-specific penalty
        fields when not given, the newer ``data`` keys at their defaults) are left out, so older recipes dump exactly as before.
        """
        d = self.model_dump(mode="json")
        if not d["stages"]:
            del d["stages"]
        if d["model"]["init"] is None:
            del d["model"]["init"]
        if d["distill"] is None:
            del d["distill"]
        else:  # the teacher not given
            for key in ("from_epoch", "teacher"):
                if d["distill"][key] is None:
                    del d["distill"][key]
        if d["sparsity"] is None:
            del d["sparsity"]
        else:  # method-specific fields not given
            for key in METHOD_FIELDS:
                if d["sparsity"][key] is None:
                    del d["sparsity"][key]
        for key, default in DATA_KEYS_ADDED.items():
            if d["data"][key] == default:
                del d["data"][key]
        for p in d["penalties"]:
            for key in KIND_FIELDS:
                if p[key] is None:
                    del p[key]
            for g in p["groups"]:  # the one of lam/scale not given
                for key in ("lam", "scale"):
                    if g[key] is None:
                        del g[key]
        return d

    @classmethod
    def from_dict(cls, data: Any, source: str = "recipe") -> Recipe:
        """Validate ``data``; raise SparsifyError listing every problem (one line each)."""
        problems = validate_dict(data, source)
        if problems:
            raise SparsifyError(problems[0] if len(problems) == 1 else "; ".join(problems))
        return cls.model_validate(data)


# Bounds on what a recipe may cost to read. A recipe is a page of settings; anything past these
# is an accident or an attack (alias bombs, 10,000-deep nesting, 5,000-digit integers).
MAX_RECIPE_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 100_000  # YAML nodes after aliases are expanded
MAX_INT_DIGITS = 30


class _RecipeYAMLError(Exception):
    """A recipe-specific refusal raised while composing or constructing (has a line number)."""

    def __init__(self, problem: str, mark: Any = None) -> None:
        super().__init__(problem)
        self.problem, self.mark = problem, mark


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.1 demands ``1.0e-4``), refuses
    duplicate keys (YAML says they are an error; PyYAML keeps the last one silently), and
    bounds nesting depth and integer size."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _RecipeYAMLError(
                    f"nesting deeper than {MAX_DEPTH} levels", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: SafeLoader's own error says so below
                continue
            if duplicate:
                raise _RecipeYAMLError(f"duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: Any) -> int:
        digits = sum(ch.isdigit() for ch in str(node.value))
        if digits > MAX_INT_DIGITS:
            raise _RecipeYAMLError(
                f"an integer of {digits} digits (at most {MAX_INT_DIGITS})", node.start_mark
            )
        return super().construct_yaml_int(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def _expanded_size(node: Any, memo: dict[int, int]) -> int:
    """Node count with every alias expanded (a DAG walk: an alias bomb is small as a graph)."""
    if id(node) in memo:
        if memo[id(node)] < 0:
            raise _RecipeYAMLError("an anchor that contains itself", node.start_mark)
        return memo[id(node)]
    memo[id(node)] = -1  # in progress: meeting it again below means a cycle (``&a [*a]``)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    memo[id(node)] = size = min(size, MAX_NODES + 1)
    return size


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


def validate_dict(data: Any, source: str = "recipe") -> list[str]:
    """Every problem with ``data`` as a recipe, one line each (empty list: valid)."""
    if not isinstance(data, dict):
        return [
            f"{source}: a recipe is a YAML mapping of keys (model, data, optimizer, ...); got {type(data).__name__}."
        ]
    return problems(Recipe, data, source, tagged={"stages": STAGE_TYPES})


def parse_yaml(text: str, source: str = "recipe") -> Any:
    """Parse YAML with the safe loader; every refusal is a one-line SparsifyError.

    Refused: tags (plain data only), syntax errors, duplicate keys, more than
    ``MAX_RECIPE_BYTES`` of text, nesting deeper than ``MAX_DEPTH``, more than ``MAX_NODES``
    nodes once aliases are expanded, integers of more than ``MAX_INT_DIGITS`` digits.
    """
    if len(text) > MAX_RECIPE_BYTES:
        raise SparsifyError(
            f"{source}: {len(text):,} characters is not a recipe (at most {MAX_RECIPE_BYTES:,}); "
            "check the file."
        )
    loader = None
    try:
        loader = _Loader(text)  # its reader already refuses control characters
        node = loader.get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_NODES:
            raise _RecipeYAMLError(
                f"more than {MAX_NODES:,} values once anchors/aliases are expanded", node.start_mark
            )
        return loader.construct_document(node) if node is not None else None
    except _RecipeYAMLError as exc:
        where = f" at line {exc.mark.line + 1}" if exc.mark else ""
        raise SparsifyError(f"{source}: {exc.problem}{where}; fix the file.") from None
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
    except RecursionError:  # a cycle through aliases reached the constructor
        raise SparsifyError(f"{source}: recursive anchors/aliases; fix the file.") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_recipe_text(path: str | os.PathLike[str]) -> str:
    """The text of the recipe file at ``path`` (UTF-8, at most ``MAX_RECIPE_BYTES``)."""
    path = Path(path)
    if not path.is_file():
        raise SparsifyError(
            f"recipe {path} does not exist; give the path to a .yaml recipe (see recipes/)."
        )
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise SparsifyError(
            f"{path}: {path.stat().st_size:,} bytes is not a recipe (at most "
            f"{MAX_RECIPE_BYTES:,}); check the file."
        )
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SparsifyError(f"{path}: not UTF-8 text; save the recipe as UTF-8 YAML.") from None


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read and validate the recipe at ``path``."""
    return Recipe.from_dict(parse_yaml(read_recipe_text(path), str(path)), str(path))


def dump_recipe(recipe: Recipe) -> str:
    """YAML text of ``recipe`` (round-trips through :func:`parse_yaml` and ``Recipe.from_dict``)."""
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
