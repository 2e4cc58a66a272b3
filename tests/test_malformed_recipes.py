"""Malformed-input suite: broken recipes get one line naming the key and the fix, exit 2,
no traceback, nothing written. Plus hypothesis fuzzing of the recipe loader."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsify.cli import main
from sparsify.errors import SparsifyError
from sparsify.pipeline.recipe import Recipe, parse_yaml, validate_dict

TINY = "model: {name: lenet300_100}\ndata: {train_subset: 100, test_subset: 100}\nepochs: 1\n"

CASES: list[tuple[str, str, str]] = [
    # (id, recipe text, expected fragment of the one-line message)
    # --- YAML syntax and non-data YAML
    ("unclosed-list", "epochs: [1", "YAML syntax error"),
    ("unclosed-map", "model: {name: lenet5", "YAML syntax error"),
    ("bad-indent", "model:\n  name: lenet5\n bad: 1", "YAML syntax error"),
    ("tab-indent", "model:\n\tname: lenet5", "YAML syntax error"),
    ("duplicate-colon", "epochs: 1: 2", "YAML syntax error"),
    ("python-tag", "!!python/object/apply:os.system ['true']", "YAML tag not allowed"),
    ("python-name-tag", "model: !!python/name:os.system", "YAML tag not allowed"),
    ("custom-tag", "epochs: !include other.yaml", "YAML tag not allowed"),
    ("top-level-list", "- epochs\n- 1", "a recipe is a YAML mapping"),
    ("top-level-scalar", "just text", "a recipe is a YAML mapping"),
    ("empty-file", "", "a recipe is a YAML mapping"),
    ("binary", "\x00\x01\x02", "YAML syntax error"),
    # --- unknown keys
    ("typo-top", "epoch: 3", "unknown key 'epoch'"),
    ("dash-key", "-: 1", "unknown key '-'"),
    ("hyphen-key", "learning-rate: 0.1", "unknown key 'learning-rate'"),
    ("typo-optimizer", "optimiser: {lr: 0.1}", "did you mean 'optimizer'"),
    ("typo-lr", "optimizer: {learning_rate: 0.1}", "unknown key 'optimizer.learning_rate'"),
    ("typo-model", "model: {nme: lenet5}", "unknown key 'model.nme'"),
    ("typo-data", "data: {subset: 100}", "unknown key 'data.subset'"),
    (
        "typo-penalty",
        "penalties: [{kind: l1_prox, lamda: 1.0e-4}]",
        "unknown key 'penalties[0].lamda'",
    ),
    (
        "typo-schedule",
        "penalties: [{kind: l1_prox, lam: 1, schedule: {knd: constant}}]",
        "unknown key 'penalties[0].schedule.knd'",
    ),
    (
        "typo-group",
        "penalties: [{kind: l1_prox, lam: 1, groups: [{pattern: a, lamb: 1}]}]",
        "unknown key 'penalties[0].groups[0].lamb'",
    ),
    # --- wrong types
    ("epochs-float", "epochs: 1.5", "'epochs' should be a valid integer"),
    ("epochs-string", "epochs: ten", "'epochs' should be a valid integer"),
    ("epochs-bool", "epochs: true", "'epochs' should be a valid integer"),
    ("batch-list", "batch_size: [100]", "'batch_size' should be a valid integer"),
    ("lr-string", "optimizer: {lr: fast}", "'optimizer.lr' should be a valid number"),
    ("lr-quoted", "optimizer: {lr: '0.1'}", "'optimizer.lr' should be a valid number"),
    ("model-as-string", "model: lenet5", "'model' should be a valid dictionary"),
    ("penalties-map", "penalties: {kind: l1_prox, lam: 1}", "'penalties' should be a valid list"),
    (
        "lam-string",
        "penalties: [{kind: l1_prox, lam: small}]",
        "'penalties[0].lam' should be a valid number",
    ),
    (
        "include-string",
        "penalties: [{kind: l1_prox, lam: 1, include: fc}]",
        "'penalties[0].include' should be a valid list",
    ),
    ("seed-negative", "seed: -1", "'seed' should be greater than or equal to 0"),
    (
        "nesterov-string",
        "optimizer: {nesterov: 'yes'}",
        "'optimizer.nesterov' should be a valid boolean",
    ),
    ("betas-short", "optimizer: {betas: [0.9]}", "'optimizer.betas'"),
    # --- lambdas
    (
        "lam-negative",
        "penalties: [{kind: l1_prox, lam: -0.1}]",
        "'penalties[0].lam' should be greater than or equal to 0",
    ),
    (
        "lam-nan",
        "penalties: [{kind: l1_prox, lam: .nan}]",
        "'penalties[0].lam' must be a finite number",
    ),
    (
        "lam-inf",
        "penalties: [{kind: l1_prox, lam: .inf}]",
        "'penalties[0].lam' must be a finite number",
    ),
    (
        "lam-neg-inf",
        "penalties: [{kind: l2_coupled, lam: -.inf}]",
        "'penalties[0].lam' must be a finite number",
    ),
    (
        "lam-list-negative",
        "penalties: [{kind: l1_prox, lam: [0.1, -1]}]",
        "'penalties[0].lam[1]' should be greater than or equal to 0",
    ),
    (
        "lam-list-nan",
        "penalties: [{kind: l1_prox, lam: [0.1, .nan]}]",
        "'penalties[0].lam[1]' must be a finite number",
    ),
    ("lam-empty-list", "penalties: [{kind: l1_prox, lam: []}]", "empty lambda list"),
    (
        "group-lam-negative",
        "penalties: [{kind: l1_prox, lam: 1, groups: [{pattern: a, lam: -1}]}]",
        "'penalties[0].groups[0].lam'",
    ),
    (
        "two-sweeps",
        "penalties: [{kind: l1_prox, lam: [1]}, {kind: l2_coupled, lam: [1]}]",
        "keep one list",
    ),
    ("lam-missing", "penalties: [{kind: l1_prox}]", "required key 'penalties[0].lam' is missing"),
    # --- choices and semantics
    ("unknown-kind", "penalties: [{kind: l0, lam: 1}]", "'penalties[0].kind' should be"),
    (
        "unknown-threshold",
        "penalties: [{kind: l1_prox, lam: 1, threshold: lr}]",
        "'penalties[0].threshold'",
    ),
    (
        "threshold-on-l2",
        "penalties: [{kind: l2_coupled, lam: 1, threshold: lambda}]",
        "applies to l1_prox and weight_decay",
    ),
    (
        "bad-regex",
        "penalties: [{kind: l1_prox, lam: 1, exclude: ['[a-']}]",
        "not a valid regular expression",
    ),
    (
        "unknown-optimizer",
        "optimizer: {name: lbfgs}",
        "'optimizer.name' should be 'sgd', 'adam' or 'adamw'",
    ),
    ("unknown-device", "device: tpu", "'device' should be 'auto', 'cpu' or 'cuda'"),
    (
        "unknown-dataset",
        "data: {dataset: imagenet}",
        "unknown dataset 'imagenet'; choose one of cifar10, cifar100, emnist, fashion_mnist",
    ),
    ("val-both", "data: {val_size: 5, val_fraction: 0.1}", "give either val_size or val_fraction"),
    (
        "image-size-1d",
        "data: {image_size: [64]}",
        "'data.image_size' must be [H, W], two sizes in pixels; got [64]",
    ),
    (
        "unknown-unit",
        "penalties: [{kind: l1_prox, lam: 1, schedule: {kind: linear_warmup, unit: hours}}]",
        "'penalties[0].schedule.unit'",
    ),
    (
        "ramp-past-training",
        "epochs: 10\npenalties: [{kind: variational_dropout, lam: 1.0e-4, schedule: {kind: linear_warmup, length: 50, unit: epochs}}]",
        "penalties[0].schedule.length (50 epochs) is past the train stage's 10 epochs, so lambda would never reach 0.0001",
    ),
    ("version-2", "version: 2", "'version' should be 1"),
    ("unknown-model", "model: {name: lenet6}", "'model.name' is not a known model"),
    ("empty-torchvision", "model: {name: 'torchvision:'}", "'model.name' is not a known model"),
    # --- huge or impossible values
    ("epochs-huge", "epochs: 1000000000", "'epochs' should be less than or equal to 100000"),
    (
        "batch-huge",
        "batch_size: 10000000000",
        "'batch_size' should be less than or equal to 1000000",
    ),
    (
        "subset-huge",
        "data: {train_subset: 200000000}",
        "'data.train_subset' should be less than or equal to 100000000",
    ),
    (
        "test-subset-zero",
        "data: {test_subset: 0}",
        "'data.test_subset' should be greater than or equal to 1",
    ),
    (
        "classes-one",
        "model: {num_classes: 1}",
        "'model.num_classes' should be greater than or equal to 2",
    ),
    (
        "channels-huge",
        "model: {in_channels: 100000}",
        "'model.in_channels' should be less than or equal to 64",
    ),
    ("momentum-one", "optimizer: {momentum: 1.0}", "'optimizer.momentum' should be less than 1"),
    ("lr-zero", "optimizer: {lr: 0}", "'optimizer.lr' should be greater than 0"),
    ("threads-zero", "threads: 0", "'threads' should be greater than or equal to 1"),
]

RUNTIME_CASES: list[tuple[str, str, str]] = [
    # valid schema, refused once the run starts (before anything is written)
    (
        "missing-data-dir",
        TINY.replace("data: {", "data: {dir: /nonexistent/mnist, "),
        "does not exist; pass --data-dir",
    ),
    (
        "unknown-torchvision",
        TINY.replace("lenet300_100", "'torchvision:resnet19'"),
        "unknown torchvision classifier 'resnet19'",  # refused when the recipe is read
    ),
    (
        "wrong-channels",
        TINY.replace("{name: lenet300_100}", "{name: lenet5, in_channels: 3}"),
        "dataset 'mnist' has 1-channel images but model.in_channels is 3",
    ),
    (
        "subset-beyond-the-data",
        TINY.replace("train_subset: 100", "train_subset: 70000"),
        "data.train_subset must be in [1, 60000]; got 70000.",
    ),
    (
        "split-on-mnist",
        TINY.replace("test_subset: 100", "test_subset: 100, split: letters"),
        "mnist has no splits",
    ),
    (
        "classes-mismatch",
        TINY.replace("lenet300_100", "lenet300_100, num_classes: 47"),
        "set model.num_classes: 10",
    ),
    (
        "too-small-for-28x28",
        TINY.replace("lenet300_100", "'torchvision:alexnet'"),
        "cannot take input of shape",
    ),
    ("sweep-to-train", TINY + "penalties: [{kind: l1_prox, lam: [0, 1]}]", "sparsify sweep"),
]


def _check_cli(
    tmp_path: Path, text: str, expected: str, capsys, extra: tuple[str, ...] = ()
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(text.encode("utf-8"))
    out = tmp_path / "out"
    assert main(["train", str(path), "--out", str(out), "-q", *extra]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert not out.exists(), "nothing may be written for a bad recipe"


@pytest.mark.parametrize("text,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_schema_errors(tmp_path: Path, text: str, expected: str, capsys) -> None:
    _check_cli(tmp_path, text, expected, capsys)


@pytest.mark.parametrize(
    "text,expected", [c[1:] for c in RUNTIME_CASES], ids=[c[0] for c in RUNTIME_CASES]
)
def test_runtime_errors(tmp_path: Path, text: str, expected: str, capsys, mnist_dir: Path) -> None:
    extra = () if "data: {dir:" in text else ("--data-dir", str(mnist_dir))
    _check_cli(tmp_path, text, expected, capsys, extra)


def test_suite_is_large_enough() -> None:
    assert len(CASES) + len(RUNTIME_CASES) >= 50


def test_real_process_exit_code(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: -1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "sparsify", "train", str(path), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert not (tmp_path / "o").exists()


def test_missing_recipe_file(tmp_path: Path, capsys) -> None:
    assert main(["train", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


# --- fuzzing: whatever the input, the loader answers with a Recipe or one-line SparsifyErrors

KEYS = [
    "version",
    "name",
    "seed",
    "device",
    "threads",
    "model",
    "data",
    "optimizer",
    "epochs",
    "batch_size",
    "penalties",
    "output",
    "kind",
    "lam",
    "lr",
    "scope",
    "include",
    "schedule",
    "unit",
    "length",
    "x",
]
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["l1_prox", "sgd", "lenet5", "all", "epochs", "lambda"]),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=8))
def test_fuzz_recipe_dicts(data: dict) -> None:
    problems = validate_dict(data)
    assert all(isinstance(p, str) and "\n" not in p for p in problems)
    if problems:
        with pytest.raises(SparsifyError):
            Recipe.from_dict(data)
    else:
        r = Recipe.from_dict(data)
        assert Recipe.from_dict(r.to_dict()) == r


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_yaml_text(text: str) -> None:
    try:
        data = parse_yaml(text)
    except SparsifyError as exc:
        assert "\n" not in str(exc)
        return
    problems = validate_dict(data)
    assert all("\n" not in p for p in problems)
    yaml.safe_dump(data)  # whatever parsed is plain data


@pytest.mark.parametrize(
    ("key", "text"),
    [
        ("optimizer.lr", "optimizer: {lr: 1.0e308}\n"),
        ("optimizer.weight_decay", "optimizer: {weight_decay: 1.0e39}\n"),
        ("penalties[0].lam", "penalties: [{kind: l1_prox, lam: 1.0e308}]\n"),
    ],
)
def test_floats_beyond_float32_are_refused(key: str, text: str) -> None:
    problems = validate_dict(parse_yaml(text, "r.yaml"), "r.yaml")
    assert len(problems) == 1 and f"'{key}' must fit float32" in problems[0], problems
