"""Sparsity targets in recipes: exact counts through the real stages, the magnitude baselines
(one-shot, gradual on Zhu & Gupta's cubic schedule), the lambda controller, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from test_data_formats import idx_folder
from torch.utils.data import TensorDataset

from sparsify.cli import main
from sparsify.errors import SparsifyError
from sparsify.penalties import freeze_support_, project_to_sparsity_
from sparsify.pipeline import stages
from sparsify.pipeline.checkpoint import save_checkpoint
from sparsify.pipeline.data.registry import DatasetSplits
from sparsify.pipeline.recipe import Recipe, load_recipe
from sparsify.pipeline.stages import run_recipe, train
from sparsify.pipeline.zoo import build_model

ROOT = Path(__file__).resolve().parents[1]
COMPARE = sorted((ROOT / "recipes" / "compare").glob("*.yaml"))
WEIGHTS = ("fc1.weight", "fc2.weight", "fc3.weight")
N = 784 * 300 + 300 * 100 + 100 * 10  # LeNet-300-100's Linear weights
OWN_TRAIN_OPTIMIZER = {
    "lenet300_vd_t95",
    "lenet300_vd_t98",
    "lenet5_vd_t98",
}  # variational dropout trains with Adam, as its paper


def _data(n_train: int = 200, n_test: int = 50) -> DatasetSplits:
    """Random 28x28 images with labels from a fixed random linear map (learnable, tiny)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_test, 1, 28, 28, generator=g)
    y = (x.flatten(1) @ torch.randn(784, 10, generator=g)).argmax(1)
    return DatasetSplits(
        train=TensorDataset(x[:n_train], y[:n_train]),
        test=TensorDataset(x[n_train:], y[n_train:]),
        input_shape=(1, 28, 28),
        num_classes=10,
    )


def _recipe(sparsity: dict, penalties: list | None = None, **over: object) -> Recipe:
    data = {
        "threads": 1,
        "model": {"name": "lenet300_100"},
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "epochs": 4,
        "batch_size": 50,  # 4 steps per epoch
        "penalties": [{"kind": "l1_prox", "lam": 1e-3, "threshold": "lr_lambda"}]
        if penalties is None
        else penalties,
        "sparsity": sparsity,
        "stages": [{"kind": "train"}, {"kind": "debias", "epochs": 1}],
        **over,
    }
    return Recipe.from_dict(data)


def _zeros(model: torch.nn.Module) -> dict[str, int]:
    return {n: int((p == 0).sum()) for n, p in model.named_parameters() if n in WEIGHTS}


# ----------------------------------------------------------------------------- exact targets


@pytest.mark.parametrize(
    "sparsity",
    [
        {"target": 0.9},
        {"target": 0.95, "granularity": "layer"},
        {"target": 0.8, "method": "magnitude"},
        {"target": 0.9, "method": "magnitude", "schedule": "gradual", "start": 1, "end": 3},
    ],
    ids=["prox-global", "prox-layer", "oneshot", "gradual"],
)
def test_target_is_reached_exactly_through_the_stages(sparsity: dict) -> None:
    method = sparsity.get("method", "prox")
    recipe = _recipe(sparsity, [] if method == "magnitude" else None)
    result = run_recipe(recipe, _data(), progress=False)
    zeros = _zeros(result.model)
    t = sparsity["target"]
    if sparsity.get("granularity") == "layer":
        sizes = {n: p.numel() for n, p in result.model.named_parameters() if n in WEIGHTS}
        assert zeros == {n: round(t * sizes[n]) for n in WEIGHTS}
    else:
        assert sum(zeros.values()) == round(t * N)
    rec = result.metrics["sparsity"]
    assert rec["exact"] and rec["zeros"] == sum(zeros.values()) == rec["target_zeros"]
    assert rec["reached"] == pytest.approx(t, abs=1 / N)  # within one weight
    assert rec["selected"] == N and rec["tensors"] == list(WEIGHTS)
    assert [r["epoch"] for r in rec["epochs"]] == [1, 2, 3, 4]
    # the debias stage trained the survivors without reviving a zero
    train_row, debias_row = result.metrics["stages"]
    assert train_row["nonzero_weights"] == debias_row["nonzero_weights"] == N - sum(zeros.values())
    if method == "magnitude" and "schedule" not in sparsity:
        assert rec["before_projection"] == 0.0  # one-shot: dense until the end of training
        assert rec["schedule"] == "oneshot"


def test_metrics_json_records_target_and_sparsity_before_projection(tmp_path: Path) -> None:
    """Through ``sparsify train`` on a generated MNIST folder."""
    folder = idx_folder(tmp_path / "mnist", n_train=120, n_test=40)
    recipe = _recipe({"target": 0.9}, epochs=2, data={"train_subset": 100, "val_size": 20})
    path = tmp_path / "r.yaml"
    path.write_text("# sparsify train r.yaml\n" + yaml.safe_dump(recipe.to_dict()))
    out = tmp_path / "run"
    assert main(["train", str(path), "--out", str(out), "--data-dir", str(folder), "-q"]) == 0
    rec = json.loads((out / "metrics.json").read_text())["sparsity"]
    assert rec["target"] == 0.9 and rec["exact"] and rec["zeros"] == round(0.9 * N)
    assert 0.0 <= rec["before_projection"] < 0.9 and rec["after_projection"] == rec["reached"]
    assert load_recipe(out / "recipe.yaml").sparsity == recipe.sparsity


def test_a_run_sparser_than_the_target_regrows_to_it_in_debias() -> None:
    """A lambda too strong leaves more zeros than the target (53% for 40%): the projection
    keeps the zeros with the largest gradient in the masks and debias trains them back."""
    recipe = _recipe(
        {"target": 0.4},
        [{"kind": "l1_prox", "lam": 0.05, "threshold": "lr_lambda"}],
        epochs=2,
    )
    result = run_recipe(recipe, _data(), progress=False)
    rec = result.metrics["sparsity"]
    assert rec["before_projection"] > 0.5 and rec["regrown"] > 0.1 * N
    assert rec["after_projection"] == rec["before_projection"]  # regrown weights are still 0
    assert rec["exact"] and sum(_zeros(result.model).values()) == round(0.4 * N)


def test_without_debias_an_overshoot_is_reported_not_hidden() -> None:
    recipe = _recipe(
        {"target": 0.4},
        [{"kind": "l1_prox", "lam": 0.05, "threshold": "lr_lambda"}],
        epochs=2,
        stages=[],
    )
    rec = run_recipe(recipe, _data(), progress=False).metrics["sparsity"]
    assert not rec["exact"] and rec["reached"] > 0.5 and rec["regrown"] > 0.1 * N


def test_project_to_sparsity_regrows_by_gradient_and_freeze_honours_the_masks() -> None:
    w = torch.nn.Parameter(torch.tensor([0.0, 0.0, 0.0, 3.0, 0.0, -1.0]))
    grad = torch.tensor([0.1, 5.0, 0.2, 0.0, 4.0, 0.0])
    (mask,) = project_to_sparsity_([w], 0.5, grow=[grad])  # 3 zeros wanted, 4 present
    assert mask.tolist() == [False, True, False, True, False, True]  # |grad| 5 regrows
    model = torch.nn.Linear(6, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(w.detach().view(1, 6))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    freeze_support_(model, opt, support={"weight": mask.view(1, 6)})
    model(torch.ones(3, 6)).sum().backward()
    opt.step()
    assert (model.weight[0] != 0).tolist() == [False, True, False, True, False, True]
    with pytest.raises(SparsifyError, match="has shape"):
        freeze_support_(model, opt, support={"weight": mask})


def test_project_to_sparsity_per_layer_prunes_one_tensor_and_regrows_another() -> None:
    a = torch.tensor([0.5, -0.125, 0.25, 0.125])  # no zeros: the two smallest |w| go
    b = torch.tensor([0.0, 0.0, 0.0, 1.0])  # 3 zeros, 2 wanted: the larger |grow| regrows
    masks = project_to_sparsity_(
        [a, b], 0.5, "layer", grow=[None, torch.tensor([1.0, -3.0, 2.0, 0.0])]
    )
    assert [m.tolist() for m in masks] == [[True, False, True, False], [False, True, False, True]]
    assert a.tolist() == [0.5, 0.0, 0.25, 0.0] and b.tolist() == [0.0, 0.0, 0.0, 1.0]


# ----------------------------------------------------------------------------- baselines


def test_gradual_pruning_follows_the_cubic_schedule_at_every_epoch() -> None:
    start, end, every, target = 1, 5, 2, 0.9
    recipe = _recipe(
        {
            "target": target,
            "method": "magnitude",
            "schedule": "gradual",
            "start": start,
            "end": end,
            "every": every,
        },
        [],
        epochs=6,
    )
    rec = train(recipe, _data(), progress=False).metrics["sparsity"]
    spe = 4  # 200 images, batches of 50
    for row in rec["epochs"]:
        last = row["epoch"] * spe - 1  # the epoch's last optimizer step
        steps = [t for t in range(last + 1) if t == end * spe or start * spe <= t < end * spe]
        prunes = [t for t in steps if t == end * spe or (t - start * spe) % (every * spe) == 0]
        if not prunes:
            assert row["sparsity"] == 0.0
            continue
        t = prunes[-1]
        s = target * (1 - (1 - (t - start * spe) / ((end - start) * spe)) ** 3)
        assert row["sparsity"] == round(s * N) / N, row
        assert row["scheduled"] == pytest.approx(s)
    assert [r["sparsity"] > 0 for r in rec["epochs"]] == [False, False, False, True, True, True]
    assert rec["before_projection"] == target  # the schedule ended at epoch 5 of 6


def kill_then_resume(
    recipe: Recipe, data: DatasetSplits, state_dir: Path, monkeypatch, saves: int
) -> stages.TrainResult:
    """Train ``recipe`` once uninterrupted, then again killed right after its ``saves``-th
    resume-state save, then resumed; assert the resumed model equals the uninterrupted one
    bit for bit and return the resumed result."""
    ref = train(recipe, data, progress=False).model.state_dict()
    real_save, done = stages.save_train_state, []

    def save_then_die(out: Path, state: dict) -> Path:
        path = real_save(out, state)
        done.append(state["epoch"])
        if len(done) == saves:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(stages, "save_train_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(recipe, data, progress=False, state_dir=state_dir)
    monkeypatch.setattr(stages, "save_train_state", real_save)
    resumed = train(recipe, data, progress=False, state_dir=state_dir, resume=True)
    for k, v in ref.items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    return resumed


def test_gradual_pruning_resumes_bit_for_bit(tmp_path: Path, monkeypatch) -> None:
    """A run killed mid-schedule resumes with its masks and step (the state saves them)."""
    recipe = _recipe(
        {"target": 0.9, "method": "magnitude", "schedule": "gradual", "start": 0, "end": 2},
        [],
        epochs=3,
        stages=[],
    )
    resumed = kill_then_resume(recipe, _data(), tmp_path, monkeypatch, saves=1)
    assert [r["epoch"] for r in resumed.metrics["sparsity"]["epochs"]] == [1, 2, 3]


def test_lambda_controller_brings_the_prox_closer_to_the_target() -> None:
    """lam 1e-3 alone leaves ~0% zeros; the controller raises it towards the ramp."""
    off = _recipe({"target": 0.9}, epochs=6, stages=[])
    on = _recipe({"target": 0.9, "control": True}, epochs=6, stages=[])
    a = train(off, _data(), progress=False).metrics["sparsity"]
    b = train(on, _data(), progress=False).metrics["sparsity"]
    assert a["before_projection"] < 0.05
    assert b["before_projection"] > a["before_projection"] + 0.1
    assert b["lam_scale"] > 1 and all("wish" in r for r in b["epochs"])
    assert b["epochs"][-1]["wish"] == pytest.approx(0.9)


# ----------------------------------------------------------------------------- schema

BAD = [
    ({"target": 1.5}, "'sparsity.target' should be less than 1"),
    ({"target": 0}, "'sparsity.target' should be greater than 0"),
    (
        {"target": 0.9, "method": "magnitude", "schedule": "gradual", "start": 3, "end": 2},
        "schedule 'gradual' needs start <= end; got start=3, end=2",
    ),
    (
        {"target": 0.9, "method": "magnitude", "schedule": "gradual"},
        "schedule 'gradual' needs 'end'",
    ),
    (
        {"target": 0.9, "method": "magnitude", "schedule": "gradual", "end": 50},
        "sparsity.end (50) is past the train stage's 10 epochs",
    ),
    ({"target": 0.9, "schedule": "gradual"}, "'schedule' applies to method magnitude, not prox"),
    ({"target": 0.9, "method": "magnitude", "start": 2}, "'start' applies to schedule 'gradual'"),
    ({"target": 0.9, "method": "magnitude", "control": True}, "'control' applies to method prox"),
    ({"target": 0.9, "scope": "layer"}, "unknown key 'sparsity.scope'"),
    ({"target": 0.9, "granularity": "row"}, "'sparsity.granularity' should be 'global' or 'layer'"),
    ({"target": 0.9, "method": "gmp"}, "'sparsity.method' should be 'prox' or 'magnitude'"),
    ({"target": 0.9, "exclude": ["("]}, "not a valid regular expression"),
]


@pytest.mark.parametrize("sparsity,expected", BAD, ids=[e for _, e in BAD])
def test_bad_sparsity_keys_are_refused_in_one_line(
    tmp_path: Path, sparsity: dict, expected: str, capsys
) -> None:
    data = {"penalties": [{"kind": "l1_prox", "lam": 1e-3}], "sparsity": sparsity}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SparsifyError) as info:
        load_recipe(path)
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert main(["validate", str(path)]) == 2
    out = capsys.readouterr().out
    assert expected in out and out.count("\n") == 1


def test_rules_across_sections_are_refused() -> None:
    with pytest.raises(SparsifyError, match="method 'prox' needs a penalty"):
        Recipe.from_dict({"sparsity": {"target": 0.9}})
    with pytest.raises(SparsifyError, match="debias stage must freeze every weight"):
        Recipe.from_dict(
            {
                "penalties": [{"kind": "l1_prox", "lam": 1e-3}],
                "sparsity": {"target": 0.9},
                "stages": [{"kind": "train"}, {"kind": "debias", "epochs": 1, "exclude": ["fc3"]}],
            }
        )


def test_recipes_without_a_target_dump_as_before() -> None:
    r = Recipe.from_dict({"penalties": [{"kind": "l1_prox", "lam": 1e-3}]})
    assert "sparsity" not in r.to_dict()
    g = _recipe({"target": 0.9, "method": "magnitude", "schedule": "gradual", "end": 2}, [])
    assert g.to_dict()["sparsity"] == {
        "target": 0.9,
        "granularity": "global",
        "method": "magnitude",
        "include": [],
        "exclude": [],
        "schedule": "gradual",
        "end": 2.0,
    }
    assert Recipe.from_dict(g.to_dict()) == g


# ----------------------------------------------------------------------------- shipped recipes


#: Conv/Linear weights of each model the compare recipes train
SELECTED = {
    "lenet300_100": N,
    "lecture_convnet": 32 * 25 + 64 * 32 * 25 + 256 * 200 + 200 * 10,
    "lenet5": 20 * 25 + 50 * 20 * 25 + 800 * 500 + 500 * 10,
}


def _target(path: Path) -> float:
    """The target a compare recipe's name states: ``<model>_<method>_t95`` is 0.95, ``_t975``
    is 0.975."""
    return float("0." + path.stem.rsplit("_t", 1)[1])


def test_compare_recipes_differ_only_in_how_zeros_are_chosen() -> None:
    groups: dict[tuple[str, float, bool], list[dict]] = {}
    for p in COMPARE:
        d = load_recipe(p).to_dict()
        target = _target(p)
        assert d["sparsity"]["target"] == target and d["threads"] == 1 and d["data"]["val_size"] > 0
        assert d["name"] == p.stem and d["output"]["dir"] == f"results/compare/{p.stem}"
        for key in ("name", "penalties", "sparsity", "distill", "output"):
            d.pop(key, None)
        key = (p.stem.split("_")[0], target, bool(d["data"].get("augment")))
        assert key[2] == ("_aug_" in p.stem), f"{p.name}: augmented recipes say so in the name"
        groups.setdefault(key, []).append((p.stem, d))
    sizes = {key: len(dumps) for key, dumps in groups.items()}
    assert sizes == {
        ("convnet", 0.9, False): 3,
        ("convnet", 0.95, False): 5,
        ("convnet", 0.98, False): 3,
        ("lenet300", 0.9, False): 3,
        ("lenet300", 0.95, False): 6,
        ("lenet300", 0.95, True): 3,
        ("lenet300", 0.98, False): 5,
        ("lenet300", 0.98, True): 2,
        ("lenet300ft", 0.95, False): 2,
        ("lenet300ft", 0.95, True): 2,
        ("lenet300ft", 0.98, False): 3,
        ("lenet300ft", 0.98, True): 2,
        ("lenet5", 0.9, False): 3,
        ("lenet5", 0.95, False): 3,
        ("lenet5", 0.95, True): 1,
        ("lenet5", 0.975, True): 2,
        ("lenet5", 0.98, False): 4,
        ("lenet5", 0.98, True): 1,
        ("lenet5ft", 0.95, True): 2,
        ("lenet5ft", 0.98, True): 2,
    }
    # per model, target and augmentation: data, seed, epochs, optimizers, stages; a method
    # that trains with its own optimizer (as its paper does) differs in that alone
    for runs in groups.values():
        base = next(d for stem, d in runs if stem not in OWN_TRAIN_OPTIMIZER)
        for stem, d in runs:
            own = stem in OWN_TRAIN_OPTIMIZER
            assert d == (base | {"optimizer": d["optimizer"]} if own else base), stem
    assert {g[0][1]["model"]["name"] for g in groups.values()} == set(SELECTED)


@pytest.mark.parametrize("path", COMPARE, ids=[p.name for p in COMPARE])
def test_compare_recipe_runs_end_to_end_on_a_small_subset(
    path: Path, tmp_path: Path, mnist_dir: Path
) -> None:
    d = yaml.safe_load(path.read_text())
    d["data"].update(train_subset=300, test_subset=100, val_size=100)
    d["epochs"], d["stages"][1]["epochs"] = 2, 1
    if d["sparsity"].get("schedule") == "gradual":
        d["sparsity"].update(start=0, end=1)
    teacher = "teacher" in d.get("distill", {})
    if "init" in d["model"] or teacher:  # a stand-in for the dense run the recipe names
        dense = tmp_path / "dense"
        model = build_model(d["model"]["name"])
        save_checkpoint(dense, model, input_shape=(1, 28, 28), model_name=d["model"]["name"])
        if "init" in d["model"]:
            d["model"]["init"] = str(dense)
        if teacher:
            d["distill"]["teacher"] = str(dense)
    if "distill" in d and not teacher:
        d["distill"]["from_epoch"] = 1
    for p in d["penalties"]:
        if "schedule" in p:
            p["schedule"]["length"] = 1
    copy = tmp_path / path.name
    copy.write_text("# sparsify train (quick copy)\n" + yaml.safe_dump(d))
    out = tmp_path / "run"
    assert main(["train", str(copy), "--out", str(out), "--data-dir", str(mnist_dir), "-q"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    n = SELECTED[d["model"]["name"]]
    assert m["sparsity"]["selected"] == n
    assert m["sparsity"]["exact"] and m["sparsity"]["zeros"] == round(_target(path) * n)
    assert m["data"]["val_images"] == 100 and "val_error" in m
