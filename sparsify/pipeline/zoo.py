"""Model registry: the lecture's convnet, LeNet-300-100, LeNet-5 (Caffe), torchvision
classifiers and the user's own models.

``build_model(name)`` is the one entry point. Names are
    a built-in          ``lecture_convnet``, ``lenet300_100``, ``lenet5``
    ``torchvision:<fn>`` any torchvision classifier with ``num_classes`` outputs and its
                        stem adapted to ``in_channels``
    a registered name   ``sparsify.register_model(name, fn)`` (from a package passed to the
                        CLI as ``--plugin PKG``) or an entry point of group ``sparsify.models``

Recipes and checkpoints name models, never import paths: a recipe stays plain data, and
a checkpoint a user was handed can only build a model already registered on this machine.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from sparsify.errors import SparsifyError, check_input_shape


class LectureConvNet(nn.Module):
    """EE-559's MNIST convnet: conv5(32)-pool3-relu, conv5(64)-pool2-relu, fc256->200-relu, fc->10."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, kernel_size=5)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=5)
        self.fc1 = nn.Linear(256, 200)
        self.fc2 = nn.Linear(200, num_classes)
        self.pool1 = nn.MaxPool2d(3)
        self.pool2 = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, 28, 28)
        x = self.relu(self.pool1(self.conv1(x)))  # (B, 32, 8, 8)
        x = self.relu(self.pool2(self.conv2(x)))  # (B, 64, 2, 2)
        x = self.relu(self.fc1(self.flatten(x)))  # (B, 200)
        return self.fc2(x)  # (B, classes)


class LeNet300100(nn.Module):
    """LeNet-300-100: 784 -> 300 -> 100 -> classes, ReLU (Han et al. 2015's baseline MLP)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(in_channels * 28 * 28, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, 28, 28)
        x = self.relu(self.fc1(self.flatten(x)))  # (B, 300)
        x = self.relu(self.fc2(x))  # (B, 100)
        return self.fc3(x)


class LeNet5(nn.Module):
    """LeNet-5, Caffe variant: conv5(20)-pool2, conv5(50)-pool2, fc800->500-relu, fc->classes."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 20, kernel_size=5)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        self.fc1 = nn.Linear(800, 500)
        self.fc2 = nn.Linear(500, num_classes)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, 28, 28)
        x = self.pool(self.conv1(x))  # (B, 20, 12, 12)
        x = self.pool(self.conv2(x))  # (B, 50, 4, 4)
        x = self.relu(self.fc1(self.flatten(x)))  # (B, 500)
        return self.fc2(x)


ModelFn = Callable[..., nn.Module]
MODELS: dict[str, ModelFn] = {  # the registry: built-ins first, then register_model entries
    "lecture_convnet": LectureConvNet,
    "lenet300_100": LeNet300100,
    "lenet5": LeNet5,
}
BUILTIN_NAMES = tuple(MODELS)
# the input each entry is built for, without the batch (channels first: in_channels
# replaces the first entry); the LeNets' and the lecture convnet's Linear sizes fix 28x28
INPUT_SHAPES: dict[str, tuple[int, ...]] = {name: (1, 28, 28) for name in BUILTIN_NAMES}
TORCHVISION_PREFIX = "torchvision:"
ENTRY_POINT_GROUP = "sparsify.models"  # [project.entry-points."sparsify.models"] name = "pkg:fn"
# modules named by ``--plugin`` (comma-separated); child processes (bench's memory probes)
# inherit it, so a model registered by a plugin is known there too
PLUGIN_ENV = "SPARSIFY_PLUGINS"
HOW_TO_REGISTER = (
    "register your own with sparsify.register_model(name, fn) in a package you pass as "
    "--plugin PKG, or a 'sparsify.models' entry point"
)
_plugins_loaded: set[str] = set()
_entry_points_loaded = False


def register_model(
    name: str,
    fn: ModelFn,
    *,
    input_shape: Sequence[int] | None = None,
    overwrite: bool = False,
) -> None:
    """Make ``name`` buildable by :func:`build_model`, recipes and checkpoints.

    ``fn(**kwargs) -> nn.Module`` builds a freshly initialised model. From a recipe it is
    called with ``num_classes=`` and ``in_channels=`` (``model:`` section); from a checkpoint
    saved without a recipe, with the ``model_args`` recorded there (default none).
    ``input_shape`` (one input without the batch, e.g. ``(3, 64, 64)``) is what the model
    takes when neither a checkpoint nor ``--input-shape`` says otherwise. Names are
    plain identifiers (letters, digits, ``_ - . /``); ``torchvision:`` and the built-ins are
    reserved. Registering the same ``fn`` again is a no-op; another ``fn`` under a taken name
    needs ``overwrite=True``.

    Raises:
        SparsifyError: a reserved or malformed name, ``fn`` not callable, or a taken name.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SparsifyError(
            f"register_model: name {name!r} must be 1-100 letters, digits or '_-./', "
            "starting with a letter; e.g. 'my_net'."
        )
    if not callable(fn):
        raise SparsifyError(
            f"register_model({name!r}, fn): fn must be callable (a class or a function "
            f"returning an nn.Module); got {type(fn).__name__}."
        )
    if name in BUILTIN_NAMES:
        raise SparsifyError(f"register_model: {name!r} is a built-in model; choose another name.")
    if name in MODELS and MODELS[name] is not fn and not overwrite:
        raise SparsifyError(
            f"register_model: {name!r} is already registered to another function; choose "
            "another name or pass overwrite=True."
        )
    MODELS[name] = fn
    if input_shape is not None:
        INPUT_SHAPES[name] = check_input_shape(f"register_model({name!r})", input_shape)
    else:
        INPUT_SHAPES.pop(name, None)


def declared_input_shape(name: str, in_channels: int | None = None) -> tuple[int, ...] | None:
    """The input shape ``name`` was registered with (channels replaced by ``in_channels``
    when given), or None: torchvision classifiers and models registered without one take
    any size, so the caller must say (``--input-shape``)."""
    shape = INPUT_SHAPES.get(name)
    if shape is None:
        return None
    return (in_channels, *shape[1:]) if in_channels is not None else shape


_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_\-./]{0,99}")


def load_plugin(module: str) -> None:
    """Import ``module`` (which registers its models when imported) and remember it in the
    ``SPARSIFY_PLUGINS`` environment variable, so child processes import it too.

    Raises:
        SparsifyError: the module cannot be imported (one line naming it and the cause).
    """
    if module in _plugins_loaded:
        return
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise SparsifyError(
            f"--plugin {module}: cannot import it ({exc}); install the package or add its "
            "folder to PYTHONPATH."
        ) from None
    _plugins_loaded.add(module)
    listed = [m for m in os.environ.get(PLUGIN_ENV, "").split(",") if m]
    if module not in listed:
        os.environ[PLUGIN_ENV] = ",".join([*listed, module])


def _load_plugins() -> None:
    """Import the ``SPARSIFY_PLUGINS`` modules and the ``sparsify.models`` entry points, once."""
    global _entry_points_loaded
    for module in os.environ.get(PLUGIN_ENV, "").split(","):
        if module and module not in _plugins_loaded:
            load_plugin(module)
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in MODELS:
            continue  # an explicit register_model wins over an installed entry point
        try:
            fn = ep.load()
        except Exception as exc:  # a broken third-party package must not break sparsify
            warnings.warn(
                f"entry point {ep.name!r} ({ep.value}) of group {ENTRY_POINT_GROUP!r} could "
                f"not be loaded ({type(exc).__name__}: {exc}); skipped.",
                stacklevel=2,
            )
            continue
        register_model(ep.name, fn)


def _torchvision_archs() -> list[str]:
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def is_known(name: str) -> bool:
    """True when :func:`build_model` can build ``name`` (registered, or a torchvision classifier)."""
    if name.startswith(TORCHVISION_PREFIX):
        return name[len(TORCHVISION_PREFIX) :] in _torchvision_archs()
    if name not in MODELS:
        _load_plugins()
    return name in MODELS


def unknown_model_message(name: str, subject: str = "") -> str:
    """The one-line reason ``name`` is refused, listing the choices and how to add one.

    ``subject="is not"`` words it for a message that already shows the name (a recipe key).
    """
    if name.startswith(TORCHVISION_PREFIX):
        hint = "choose one of torchvision.models.list_models(), e.g. 'torchvision:resnet18'"
        arch = name[len(TORCHVISION_PREFIX) :]
        head = f"unknown torchvision classifier {arch!r}"
        if subject:
            head = f"{subject} a known model ({head})"
    else:
        hint = f"choose one of {', '.join(model_names())}, or {HOW_TO_REGISTER}"
        head = f"{subject} a known model" if subject else f"unknown model {name!r}"
    return f"{head}; {hint}"


def _adapt_stem(model: nn.Module, in_channels: int) -> None:
    """Replace the first Conv2d so the network accepts ``in_channels`` (torchvision assumes 3)."""
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                if child.in_channels != in_channels:
                    setattr(
                        parent,
                        child_name,
                        nn.Conv2d(
                            in_channels,
                            child.out_channels,
                            kernel_size=child.kernel_size,
                            stride=child.stride,
                            padding=child.padding,
                            dilation=child.dilation,
                            groups=1,
                            bias=child.bias is not None,
                        ),
                    )
                return
    raise SparsifyError(
        f"model has no Conv2d stem to adapt to {in_channels} input channels; use 3 channels "
        "(model.in_channels: 3 in a recipe, --input-shape 3 H W in bench)."
    )


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def require_known(name: str) -> None:
    """Raise the one-line :func:`unknown_model_message` unless :func:`is_known` (``name``)."""
    if not is_known(name):
        raise SparsifyError(_capital(unknown_model_message(name)) + ".")


def model_names() -> list[str]:
    """Names accepted by :func:`build_model` (torchvision ones are listed by prefix)."""
    _load_plugins()
    return sorted(MODELS) + [TORCHVISION_PREFIX + "<classifier>"]


def build_model(name: str, num_classes: int = 10, in_channels: int = 1, **kwargs: Any) -> nn.Module:
    """Return a freshly initialised model by name (see :func:`model_names`).

    Built-ins and torchvision classifiers take ``num_classes`` and ``in_channels``; a
    registered ``fn`` is called as ``fn(num_classes=, in_channels=, **kwargs)``.

    Raises:
        SparsifyError: unknown name (the message lists the choices and how to register
            one), a builder that refuses the arguments or does not return an nn.Module.
    """
    if name.startswith(TORCHVISION_PREFIX):
        import torchvision

        require_known(name)
        arch = name[len(TORCHVISION_PREFIX) :]
        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
        if in_channels != 3:
            _adapt_stem(model, in_channels)
        return model
    require_known(name)
    return call_builder(
        name, MODELS[name], {"num_classes": num_classes, "in_channels": in_channels, **kwargs}
    )


def call_builder(name: str, fn: ModelFn, kwargs: dict[str, Any]) -> nn.Module:
    """``fn(**kwargs)``, checked: a TypeError from the call or a non-module result is one line."""
    try:
        model = fn(**kwargs)
    except TypeError as exc:
        raise SparsifyError(
            f"model {name!r}: its builder refused the arguments {sorted(kwargs)} ({exc}); "
            "make it accept them, e.g. def build(num_classes=10, in_channels=3, **kw)."
        ) from None
    if not isinstance(model, nn.Module):
        raise SparsifyError(
            f"model {name!r}: its builder returned a {type(model).__name__}, not an nn.Module."
        )
    return model


def build_registered(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """Build ``name`` with exactly ``kwargs`` (no defaults added): how a checkpoint saved
    without a recipe rebuilds a user's model from its recorded ``model_args``."""
    if name.startswith(TORCHVISION_PREFIX):
        return build_model(name, **kwargs)
    require_known(name)
    return call_builder(name, MODELS[name], dict(kwargs))
