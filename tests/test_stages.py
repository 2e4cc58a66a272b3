"""Staged recipes (train -> debias -> shrink) and the recipe keys of the issue-5 penalties.

Real MNIST subsets, real components, a few seconds in all: the schema refuses bad stage
lists and misplaced penalty fields with one line each; ``sparsify train`` runs every stage
and writes the shrunk checkpoint plus per-stage metrics; ``sparsify stats`` reads it;
``sparsify sweep`` runs stages per lambda; recipes without stages behave as before.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from sparsify.cli import main
from sparsify.errors import SparsifyError
from sparsify.pipeline.checkpoint import SHRUNK, load_checkpoint, save_checkpoint
from sparsify.pipeline.data.mnist import load_mnist
from sparsify.pipeline.recipe import Recipe, load_recipe
from sparsify.pipeline.stages import run_recipe, train
from sparsify.pipeline.zoo import build_model

ROOT = Path(__file__).resolve().parents[1]

BASE = {
    "name": "staged",
    "threads": 1,
    "model": {"name": "lenet300_100"},
    "data": {"train_subset": 1000, "test_subset": 500},
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "epochs": 3,
    "batch_size": 100,
    # strong enough that whole fc1/fc2 rows die within 30 steps: the shrink stage has work
    "penalties": [
        {"kind": "group_lasso_prox", "lam": 0.4, "threshold": "lr_lambda", "exclude": ["^fc3\\."]}
    ],
    "stages": [
        {"kind": "train"},
        {"kind": "debias", "epochs": 1, "optimizer": {"name": "adam", "lr": 1e-3}},
        {"kind": "shrink", "example_batch": 8},
    ],
}


def _write(tmp_path: Path, data: dict, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text("# sparsify train r.yaml\n" + yaml.safe_dump(data))
    return path


# ----------------------------------------------------------------------------- schema

BAD = [
    ("stages: [{kind: debias, epochs: 1}]", "'stages': the first stage must be {kind: train}"),
    ("stages: [{kind: train}, {kind: debias}]", "required key 'stages[1].epochs' is missing"),
    (
        "stages: [{kind: train}, {kind: debias, epochs: 1, epoch: 2}]",
        "unknown key 'stages[1].epoch'; remove it or fix the spelling (did you mean 'epochs'?)",
    ),
    (
        "stages: [{kind: train}, {kind: debias, epochs: 1, optimizer: {lrr: 1}}]",
        "unknown key 'stages[1].optimizer.lrr'",
    ),
    (
        "stages: [{kind: train}, {kind: debias, epochs: 0}]",
        "'stages[1].epochs' should be greater than or equal to 1",
    ),
    ("stages: [{kind: train}, {kind: prune}]", "'stages[1].kind' should be one of train, debias"),
    ("stages: [{name: a}]", "required key 'stages[0].kind' is missing"),
    (
        "stages: [{kind: train}, {kind: shrink}, {kind: debias, epochs: 1}]",
        "stages run in the order train, debias, shrink",
    ),
    ("stages: [{kind: train}, {kind: train}]", "stage 1 repeats kind 'train'"),
    (
        "stages: [{kind: train, name: a}, {kind: shrink, name: a}]",
        "two stages are named 'a'",
    ),
    ("stages: [{kind: train}, {kind: shrink, exclude: ['(']}]", "not a valid regular expression"),
    (
        "stages: [{kind: train}, {kind: shrink, example_batch: 0}]",
        "'stages[1].example_batch' should be greater than or equal to 1",
    ),
    (
        "stages: [{kind: train}, {kind: debias, epochs: 1, scope: weights}]",
        "'stages[1].scope' should be 'prunable' or 'all'",
    ),
    (
        "penalties: [{kind: l1_prox, lam: 1, n: 2}]",
        "'n' applies to nm_projection, not l1_prox; remove it",
    ),
    (
        "penalties: [{kind: l1_prox, lam: 1, size_scaled: true}]",
        "'size_scaled' applies to group_lasso_prox and sparse_group_lasso_prox, not l1_prox",
    ),
    (
        "penalties: [{kind: group_lasso_prox, lam: 1, lam_l1: 0.1}]",
        "'lam_l1' applies to sparse_group_lasso_prox, not group_lasso_prox",
    ),
    (
        "penalties: [{kind: group_lasso_prox, lam: 1, scope: all}]",
        "group_lasso_prox needs scope 'prunable'",
    ),
    ("penalties: [{kind: nm_projection, n: 5}]", "nm_projection needs n <= m; got n=5, m=4"),
    ("penalties: [{kind: nm_projection, m: 0}]", "'penalties[0].m' should be greater than"),
    (
        "penalties: [{kind: nm_projection, threshold: lambda}]",
        "'threshold' applies to l1_prox and weight_decay and the group-lasso prox kinds, not nm",
    ),
    (
        "penalties: [{kind: sparse_group_lasso_prox, lam: [0, 1], lam_l1: 0.1}]",
        "sparse_group_lasso_prox needs lam > 0 when lam_l1 > 0",
    ),
    ("penalties: [{kind: group_lasso_prox}]", "required key 'penalties[0].lam' is missing"),
    (
        "penalties: [{kind: group_lasso_prox, lam: 1, size_scaled: 'yes'}]",
        "'penalties[0].size_scaled' should be a valid boolean",
    ),
]


@pytest.mark.parametrize("text,expected", BAD, ids=[e for _, e in BAD])
def test_bad_stage_or_penalty_field_gets_one_line(
    tmp_path: Path, text: str, expected: str, capsys
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SparsifyError) as info:
        load_recipe(path)
    assert expected in str(info.value) and "\n" not in str(info.value)
    out = tmp_path / "out"
    assert main(["train", str(path), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and err.count("\n") == 1
    assert not out.exists()


def test_new_penalty_kinds_and_stages_round_trip() -> None:
    r = Recipe.from_dict(
        {
            "penalties": [
                {"kind": "l1_prox", "lam": 1e-4},
                {"kind": "nm_projection", "n": 1, "m": 8},  # lam defaults to 1.0 for N:M
                {
                    "kind": "sparse_group_lasso_prox",
                    "lam": 0.1,
                    "lam_l1": 0.05,
                    "size_scaled": True,
                    "threshold": "lr_lambda",
                },
            ],
            "stages": BASE["stages"],
        }
    )
    assert Recipe.from_dict(r.to_dict()) == r
    assert r.penalties[1].lam == 1.0
    assert "n" not in r.to_dict()["penalties"][0], "fields of other kinds are not dumped"
    from sparsify.penalties import NMProjection, SparseGroupLassoProx, penalty_from_dict

    nm = penalty_from_dict(r.penalties[1].to_config_dict())
    assert nm == NMProjection(n=1, m=8)
    sgl = penalty_from_dict(r.penalties[2].to_config_dict())
    assert sgl == SparseGroupLassoProx(
        lam=0.1, lam_l1=0.05, size_scaled=True, threshold="lr_lambda"
    )
    assert [s.kind for s in r.stages] == ["train", "debias", "shrink"]


def test_single_stage_recipes_dump_as_before() -> None:
    """No ``stages`` key and no new penalty keys: stored recipes of old runs are unchanged."""
    for name in ("quickstart.yaml", "lecture_l1.yaml", "lecture_l2.yaml"):
        d = load_recipe(ROOT / "recipes" / name).to_dict()
        assert "stages" not in d
        assert set(d["penalties"][0]) == {
            "kind",
            "lam",
            "threshold",
            "scope",
            "include",
            "exclude",
            "groups",
            "schedule",
        }


# ----------------------------------------------------------------------------- running


def test_train_runs_every_stage_and_writes_a_shrunk_checkpoint(
    tmp_path: Path, mnist_dir: Path, capsys
) -> None:
    out = tmp_path / "run"
    path = _write(tmp_path, BASE)
    assert main(["train", str(path), "--out", str(out), "--data-dir", str(mnist_dir), "-q"]) == 0
    text = capsys.readouterr().out
    assert "stage debias (debias)" in text and "stage shrink (shrink)" in text
    m = json.loads((out / "metrics.json").read_text())
    train_row, debias_row, shrink_row = m["stages"]
    assert [r["name"] for r in m["stages"]] == ["train", "debias", "shrink"]
    for row in m["stages"]:
        for key in ("train_error", "test_error", "zero_fraction", "seconds", "nonzero_weights"):
            assert key in row
    assert train_row["epochs"] == 3 and debias_row["epochs"] == 1
    # debias: zeros stay zero (the support is frozen), so the weights kept cannot grow
    assert debias_row["nonzero_weights"] == train_row["nonzero_weights"]
    assert debias_row["layers"]["fc1.weight"]["zeros"] == train_row["layers"]["fc1.weight"]["zeros"]
    # shrink: dead rows gone, same function (eval-mode predictions within 1e-5)
    report = shrink_row["shrink"]
    assert report["params_after"] < report["params_before"]
    assert shrink_row["test_error"] == debias_row["test_error"]
    assert m["test_error"] == shrink_row["test_error"], "top level describes the final model"
    assert m["seconds"] == pytest.approx(sum(r["seconds"] for r in m["stages"]))
    assert len(m["history"]) == 3

    ck = load_checkpoint(out)
    assert ck.shrunk and json.loads(ck.metadata[SHRUNK])["fc3"] == [
        10,
        report["layers"][1]["out_after"],
    ]
    model = ck.build_model()  # resized from the metadata flag, then a strict load
    assert model.fc1.out_features == report["layers"][0]["out_after"] < 300
    data = load_mnist(mnist_dir, 1000, 500)  # the run's data and normalisation: same error
    wrong = (model(data.test_x).argmax(1) != data.test_y).float().mean().item()
    assert wrong == pytest.approx(m["test_error"])
    assert main(["stats", str(out)]) == 0
    assert "fc1.weight" in capsys.readouterr().out


def test_staged_train_stage_is_the_plain_run(mnist_dir: Path) -> None:
    """The train stage of a staged recipe is bit-for-bit the recipe without stages."""
    data = load_mnist(mnist_dir, 500, 100)
    plain = Recipe.from_dict({**BASE, "stages": [], "epochs": 2})
    staged = Recipe.from_dict(
        {**BASE, "epochs": 2, "stages": [{"kind": "train"}, {"kind": "shrink"}]}
    )
    a = train(plain, data, progress=False)
    b = run_recipe(plain, data, progress=False)
    c = run_recipe(staged, data, progress=False)
    assert "stages" not in b.metrics and "stages" in c.metrics
    assert (
        a.metrics["test_error"] == b.metrics["test_error"] == c.metrics["stages"][0]["test_error"]
    )
    for k, v in a.model.state_dict().items():
        torch.testing.assert_close(v, b.model.state_dict()[k], rtol=0, atol=0)


def test_sweep_runs_stages_per_lambda(tmp_path: Path, mnist_dir: Path) -> None:
    data = {
        **BASE,
        "data": {"train_subset": 300, "test_subset": 200},
        "epochs": 1,
        "penalties": [
            {"kind": "l1_prox", "lam": [0.0, 0.02], "threshold": "lr_lambda", "scope": "prunable"}
        ],
        "stages": [{"kind": "train"}, {"kind": "debias", "epochs": 1}],
    }
    out = tmp_path / "sweep"
    args = ["sweep", str(_write(tmp_path, data)), "--out", str(out), "--data-dir", str(mnist_dir)]
    assert main([*args, "-q"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [r["lam"] for r in res["rows"]] == [0.0, 0.02]
    assert all([s["name"] for s in r["stages"]] == ["train", "debias"] for r in res["rows"])
    dense, sparse = res["rows"]
    assert sparse["stages"][1]["nonzero_weights"] < dense["stages"][1]["nonzero_weights"]
    md = (out / "results.md").read_text()
    assert "test error after debias" in md and "nonzero weights after train" in md


def test_nm_projection_refuses_conv1_by_name(tmp_path: Path, mnist_dir: Path, capsys) -> None:
    """validate_selection runs when the penalty is attached: one line naming the layer."""
    data = {
        **BASE,
        "model": {"name": "lenet5"},
        "penalties": [{"kind": "nm_projection"}],
        "stages": [],
    }
    out = tmp_path / "out"
    path = _write(tmp_path, data)
    assert main(["train", str(path), "--out", str(out), "--data-dir", str(mnist_dir), "-q"]) == 2
    err = capsys.readouterr().err
    assert "conv1.weight (20, 1, 5, 5)" in err and "exclude" in err and err.count("\n") == 1
    assert not out.exists()


def test_extra_metadata_cannot_overwrite_the_format(tmp_path: Path) -> None:
    model = build_model("lenet300_100")
    with pytest.raises(SparsifyError, match="extra_metadata\\['sha256'\\]"):
        save_checkpoint(tmp_path, model, Recipe(), extra_metadata={"sha256": "0"})
    assert not (tmp_path / "model.safetensors").exists()


def test_shrink_exclude_keeps_the_named_layer_whole() -> None:
    from sparsify.structure.shrink import shrink_

    torch.manual_seed(0)
    models = [build_model("lenet300_100").eval() for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    for m in models:
        with torch.no_grad():
            m.fc1.weight[:100] = 0.0  # 100 dead fc1 neurons
    x = torch.randn(4, 1, 28, 28)
    assert (
        shrink_(models[0], x).params_after < shrink_(models[1], x, exclude=["^fc1$"]).params_after
    )
    assert models[0].fc1.out_features == 200 and models[1].fc1.out_features == 300
    with pytest.raises(SparsifyError, match="not a valid regular expression"):
        shrink_(models[1], x, exclude=["("])
