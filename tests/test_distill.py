"""Self-distillation: the loss it states, a teacher that is the model as it was after
``from_epoch`` and stays frozen, resume, and one-line refusals."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_sparsity_target import _data, kill_then_resume

from sparsify.errors import SparsifyError
from sparsify.pipeline import stages
from sparsify.pipeline.checkpoint import load_checkpoint, save_checkpoint
from sparsify.pipeline.distill import Distillation
from sparsify.pipeline.recipe import Recipe
from sparsify.pipeline.stages import run_recipe, train
from sparsify.pipeline.task import Classification
from sparsify.pipeline.zoo import build_model


def _recipe(**over: object) -> Recipe:
    data = {
        "threads": 1,
        "model": {"name": "lenet300_100"},
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "epochs": 3,
        "batch_size": 50,
        "distill": {"from_epoch": 1, "weight": 0.7, "temperature": 3.0},
        **over,
    }
    return Recipe.from_dict(data)


def test_loss_is_the_stated_mix_and_the_task_alone_before_the_snapshot() -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(5, 4)
    d = Distillation(build=lambda: torch.nn.Linear(5, 4), from_epoch=1, weight=0.7, temperature=3.0)
    x, y = torch.randn(8, 5), torch.randint(0, 4, (8,))
    s = torch.randn(8, 4)
    assert torch.equal(
        d.loss_sum(s, x, y, Classification()), F.cross_entropy(s, y, reduction="sum")
    )
    d.snapshot(net)
    t = net(x).detach()
    p_t = F.softmax(t / 3, dim=1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / 3, dim=1))).sum()
    want = 0.3 * F.cross_entropy(s, y, reduction="sum") + 0.7 * 9 * kl
    assert torch.allclose(d.loss_sum(s, x, y, Classification()), want, rtol=1e-5)
    # a student equal to its teacher pays no soft term: weight 1 leaves nothing
    d1 = Distillation(build=lambda: torch.nn.Linear(5, 4), from_epoch=1, weight=1.0)
    d1.snapshot(net)
    assert d1.loss_sum(net(x), x, y, Classification()).abs().item() < 1e-5


def test_teacher_is_the_model_after_from_epoch_and_stays_frozen() -> None:
    data = _data()
    taught = train(_recipe(), data, progress=False)
    # constant lr: the first epoch of a 3-epoch run is a 1-epoch run, bit for bit
    one = train(_recipe(epochs=1, distill=None), data, progress=False).model.state_dict()
    teacher = taught.distill.teacher.state_dict()
    assert teacher.keys() == one.keys()
    for k, v in one.items():
        assert torch.equal(teacher[k], v), k
    assert not any(p.requires_grad for p in taught.distill.teacher.parameters())
    assert not torch.equal(taught.model.state_dict()["fc1.weight"], one["fc1.weight"])
    rec = taught.metrics["distill"]
    assert rec["teacher_taken"] and rec["from_epoch"] == 1 and 0 <= rec["teacher_train_error"] <= 1
    # the soft term changes training: the same run without it ends elsewhere
    plain = train(_recipe(distill=None), data, progress=False).model.state_dict()
    assert not torch.equal(plain["fc1.weight"], taught.model.state_dict()["fc1.weight"])


def test_the_dense_teacher_keeps_teaching_a_pruned_student_through_debias() -> None:
    recipe = _recipe(
        epochs=4,
        sparsity={
            "target": 0.9,
            "method": "magnitude",
            "schedule": "gradual",
            "start": 1,
            "end": 3,
        },
        stages=[{"kind": "train"}, {"kind": "debias", "epochs": 1}],
    )
    result = train(recipe, _data(), progress=False)
    assert (result.distill.teacher.fc1.weight == 0).sum() == 0  # dense: taken before pruning
    staged = run_recipe(recipe, _data(), progress=False)
    assert staged.metrics["distill"]["teacher_taken"]
    assert staged.metrics["sparsity"]["exact"]


def test_debias_is_taught_too(monkeypatch) -> None:
    recipe = _recipe(epochs=2, stages=[{"kind": "train"}, {"kind": "debias", "epochs": 1}])
    taught = run_recipe(recipe, _data(), progress=False).model.state_dict()
    real = stages.debias
    monkeypatch.setattr(stages, "debias", lambda *a, **k: real(*a, **{**k, "distill": None}))
    untaught = run_recipe(recipe, _data(), progress=False).model.state_dict()
    assert not torch.equal(taught["fc1.weight"], untaught["fc1.weight"])


def test_distilled_run_resumes_bit_for_bit(tmp_path: Path, monkeypatch) -> None:
    recipe = _recipe(
        optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9, "lr_schedule": "cosine"}
    )
    # killed after epoch 2's save: the teacher (taken after epoch 1) must come from the state
    kill_then_resume(recipe, _data(), tmp_path, monkeypatch, saves=2)


@pytest.mark.parametrize(
    "distill,expected",
    [
        ({"from_epoch": 3}, "distill.from_epoch (3) must be below the train stage's 3 epochs"),
        ({"from_epoch": 0}, "from_epoch"),
        ({"from_epoch": 1, "weight": 0}, "weight"),
        ({"from_epoch": 1, "temperature": -1}, "temperature"),
        ({"from_epoch": 1, "alpha": 0.5}, "alpha"),
    ],
)
def test_bad_distill_sections_are_refused_in_one_line(distill: dict, expected: str) -> None:
    with pytest.raises(SparsifyError) as err:
        _recipe(distill=distill)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_distill_on_a_regression_task_is_refused() -> None:
    data = dataclasses.replace(_data(), task="regression")
    with pytest.raises(SparsifyError, match="distill needs a classification task"):
        train(_recipe(), data, progress=False)


# ----------------------------------------------------------------------------- train-then-compress


def _dense_checkpoint(tmp_path: Path, name: str = "dense_seed0", **over: object) -> Path:
    recipe = _recipe(distill=None, epochs=1, **over)
    result = train(recipe, _data(), progress=False)
    save_checkpoint(tmp_path / name, result.model, recipe)
    return tmp_path / name


def test_model_init_starts_from_the_checkpoint_with_its_seed(tmp_path: Path) -> None:
    dense = _dense_checkpoint(tmp_path)
    start = load_checkpoint(dense).state_dict
    # an lr too small to move a float32 weight: the run ends where it started
    still = {"name": "sgd", "lr": 1e-30}
    init = {"name": "lenet300_100", "init": str(tmp_path / "dense_seed{seed}")}
    out = train(
        _recipe(distill=None, epochs=1, model=init, optimizer=still), _data(), progress=False
    )
    for k, v in start.items():
        assert torch.equal(out.model.state_dict()[k].cpu(), v), k  # trained on a GPU if any
    fresh = train(_recipe(distill=None, epochs=1, optimizer=still), _data(), progress=False)
    assert not torch.equal(fresh.model.state_dict()["fc1.weight"].cpu(), start["fc1.weight"])


def test_a_checkpoint_teacher_teaches_from_the_first_step(tmp_path: Path) -> None:
    dense = _dense_checkpoint(tmp_path)
    distill = {"teacher": str(dense), "weight": 0.5}
    taught = train(_recipe(distill=distill, model={"name": "lenet5"}), _data(), progress=False)
    rec = taught.metrics["distill"]
    assert rec["teacher_taken"] and "from_epoch" not in rec and 0 <= rec["teacher_train_error"] <= 1
    teacher = taught.distill.teacher.state_dict()  # another architecture, weights untouched
    assert all(
        torch.equal(teacher[k].cpu(), v) for k, v in load_checkpoint(dense).state_dict.items()
    )
    plain = train(_recipe(distill=None, model={"name": "lenet5"}), _data(), progress=False)
    assert not torch.equal(
        plain.model.state_dict()["conv1.weight"], taught.model.state_dict()["conv1.weight"]
    )
    assert taught.distill.state_dict() is None  # a given teacher is reloaded, not resumed


def test_a_resumed_teacher_goes_to_the_students_device() -> None:
    # a resume state is read onto the CPU; on a GPU run the teacher met CUDA inputs there
    # ("mat1 is on cuda:0, different from other tensors on cpu"). "meta" stands in for the GPU.
    d = Distillation(build=lambda: build_model("lenet300_100"), from_epoch=0)
    state = build_model("lenet300_100").state_dict()
    d.load_state_dict(state, torch.device("meta"))
    assert {p.device.type for p in d.teacher.parameters()} == {"meta"}
    d.load_state_dict(state)  # no device: where the state lies
    assert {p.device.type for p in d.teacher.parameters()} == {"cpu"}


def test_bad_teachers_and_inits_fail_in_one_line_before_training(tmp_path: Path) -> None:
    five = _recipe(distill=None, model={"name": "lenet300_100", "num_classes": 5})
    wrong = tmp_path / "five"
    save_checkpoint(wrong, build_model("lenet300_100", num_classes=5), five)
    rgb = tmp_path / "rgb"  # a teacher for 3-channel images; the data has 1 channel
    save_checkpoint(
        rgb,
        build_model("lenet5", in_channels=3),
        model_name="lenet5",
        model_args={"num_classes": 10, "in_channels": 3},
        input_shape=(3, 28, 28),
    )
    cases = [
        ({"distill": {"teacher": str(wrong)}}, "the data has 10 classes"),
        ({"distill": {"teacher": str(rgb)}}, "give distill.teacher a model trained on"),
        ({"distill": {"teacher": str(tmp_path / "nowhere")}}, "distill.teacher: checkpoint"),
        ({"distill": None, "model": {"name": "lenet300_100", "init": str(wrong)}}, "model.init: "),
    ]
    for over, expected in cases:
        with pytest.raises(SparsifyError) as err:
            train(_recipe(**over), _data(), progress=False)
        assert expected in str(err.value) and "\n" not in str(err.value), err.value
    for bad, expected in (({"from_epoch": 1, "teacher": "x"}, "exactly one"), ({}, "exactly one")):
        with pytest.raises(SparsifyError, match=expected):
            _recipe(distill=bad)


def test_in_your_own_loop_a_given_teacher_teaches_at_once() -> None:
    torch.manual_seed(1)
    teacher, student = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    d = Distillation(teacher, weight=1.0, temperature=2.0)
    x, y = torch.randn(6, 5), torch.randint(0, 3, (6,))
    loss = d.loss_sum(student(x), x, y, Classification())
    loss.backward()
    assert loss.item() > 0 and student.weight.grad.abs().sum() > 0
    assert teacher.weight.grad is None  # frozen: no gradient reaches the teacher
    with pytest.raises(ValueError, match="needs build="):
        d.snapshot(student)
