"""Recipes: every shipped one validates and round-trips; bad ones get one clear line each."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparsify.cli import main
from sparsify.errors import SparsifyError
from sparsify.pipeline.recipe import Recipe, dump_recipe, load_recipe, parse_yaml, validate_dict

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "recipes").rglob("*.yaml"))


def test_recipes_are_shipped() -> None:
    names = {p.name for p in SHIPPED}
    assert {"quickstart.yaml", "lecture_l1.yaml", "lecture_l2.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_recipe_validates_and_round_trips(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("#") and "sparsify " in text.splitlines()[1] + text, (
        "recipes open with their command"
    )
    recipe = load_recipe(path)
    assert Recipe.from_dict(parse_yaml(dump_recipe(recipe))) == recipe
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    for one in recipe.expand():
        assert one.sweep() is None


def test_sweep_expansion() -> None:
    r = Recipe.from_dict({"penalties": [{"kind": "l1_prox", "lam": [0, 1e-5, 1e-4]}]})
    assert r.sweep() == (0, [0, 1e-5, 1e-4])
    assert [x.penalties[0].lam for x in r.expand()] == [0, 1e-5, 1e-4]


def test_yaml_exponent_without_dot_is_a_float() -> None:
    assert parse_yaml("lam: 1e-4")["lam"] == pytest.approx(1e-4)


BAD = [
    ("epochs: [1", "YAML syntax error"),
    ("optimiser: {lr: 0.1}", "unknown key 'optimiser'"),
    ("optimiser: {lr: 0.1}", "did you mean 'optimizer'"),
    ("epochs: 0", "'epochs' should be greater than or equal to 1"),
    ("epochs: 1.5", "'epochs' should be a valid integer"),
    ("epochs: ten", "'epochs' should be a valid integer"),
    ("optimizer: {lr: -0.1}", "'optimizer.lr' should be greater than 0"),
    ("optimizer: {name: lbfgs}", "'optimizer.name' should be 'sgd', 'adam' or 'adamw'"),
    (
        "penalties: [{kind: l1_prox, lam: -1}]",
        "'penalties[0].lam' should be greater than or equal to 0",
    ),
    ("penalties: [{kind: l1_prox, lam: .nan}]", "'penalties[0].lam' must be a finite number"),
    ("penalties: [{kind: l1_prox, lam: .inf}]", "'penalties[0].lam' must be a finite number"),
    ("penalties: [{kind: l1_prox, lam: '0.1'}]", "'penalties[0].lam' should be a valid number"),
    ("penalties: [{kind: l1_prox, lam: []}]", "empty lambda list"),
    ("penalties: [{kind: l1, lam: 1}]", "'penalties[0].kind' should be"),
    ("penalties: [{lam: 1}]", "required key 'penalties[0].kind' is missing"),
    ("penalties: [{kind: l1_prox, lam: 1, threshold: lr}]", "'penalties[0].threshold'"),
    (
        "penalties: [{kind: l2_coupled, lam: 1, threshold: lambda}]",
        "applies to l1_prox and weight_decay",
    ),
    ("penalties: [{kind: l1_prox, lam: 1, include: ['(']}]", "not a valid regular expression"),
    ("penalties: [{kind: l1_prox, lam: [1]}, {kind: l2_coupled, lam: [1]}]", "keep one list"),
    ("data: {train_subset: 0}", "'data.train_subset' should be greater than or equal to 1"),
    ("data: {dataset: imagenet}", "unknown dataset 'imagenet'; choose one of"),
    ("data: {val_size: 10, val_fraction: 0.1}", "give either val_size or val_fraction"),
    ("data: {val_fraction: 1.0}", "'data.val_fraction' should be less than 1"),
    ("model: {nme: lenet5}", "unknown key 'model.nme'"),
    ("version: 2", "'version' should be 1"),
    ("- a\n- b", "a recipe is a YAML mapping"),
    ("!!python/object/apply:os.system ['echo hacked']", "YAML tag not allowed"),
]


@pytest.mark.parametrize("text,expected", BAD, ids=[e for _, e in BAD])
def test_bad_recipe_gets_one_clear_line(tmp_path: Path, text: str, expected: str, capsys) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SparsifyError) as info:
        load_recipe(path)
    message = str(info.value)
    assert expected in message and "\n" not in message
    out = tmp_path / "out"
    assert main(["train", str(path), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and err.count("\n") == 1
    assert not out.exists(), "nothing may be written for a bad recipe"


def test_validate_reports_all_problems_at_once(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: 0\noptimizer: {lr: -1}\nfoo: 1\n")
    assert len(validate_dict(parse_yaml(path.read_text()))) == 3
    assert main(["validate", str(path), str(SHIPPED[0])]) == 2
    out = capsys.readouterr().out
    assert "'epochs'" in out and "'optimizer.lr'" in out and "'foo'" in out and ": ok" in out
