"""sparsify.stats on a hand-built state_dict: exact zeros (-0.0 included), dead units, totals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsify.stats import format_stats, model_stats, state_dict_stats, tensor_stats, unit_stats


def _state() -> dict[str, torch.Tensor]:
    return {
        # row 1 dead; columns 0 and 2 never read (-0.0 is a zero)
        "fc.weight": torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [-0.0, 2.0, 0.0]]),
        "fc.bias": torch.tensor([0.0, 1.0, -0.0]),  # 2 zeros, not weights
        # filter 0 dead; input channel 1 read by no filter
        "conv.weight": torch.tensor([[[[0.0]], [[0.0]]], [[[3.0]], [[-0.0]]]]),
        "bn.num_batches_tracked": torch.tensor(7),  # integer: not a parameter, skipped
    }


def test_tensor_stats_counts_negative_zero() -> None:
    s = tensor_stats(torch.tensor([-0.0, 0.0, 1.0, -2.0]))
    assert (s["numel"], s["zeros"], s["nnz"]) == (4, 2, 2)
    assert s["density"] == 0.5 and s["zero_fraction"] == 0.5
    assert tensor_stats(torch.empty(0))["zeros"] == 0


def test_unit_stats_dead_rows_and_columns() -> None:
    st = _state()
    assert unit_stats(st["fc.weight"]) == {
        "units": 3,
        "dead_units": 1,
        "inputs": 3,
        "dead_inputs": 2,
    }
    assert unit_stats(st["conv.weight"]) == {
        "units": 2,
        "dead_units": 1,
        "inputs": 2,
        "dead_inputs": 1,
    }
    assert unit_stats(torch.tensor([0.0, -0.0, 1.0])) == {"units": 3, "dead_units": 2}


def test_state_dict_stats_totals_separate_weights_from_biases() -> None:
    s = state_dict_stats(_state())
    assert set(s["layers"]) == {"fc.weight", "fc.bias", "conv.weight"}
    assert s["layers"]["fc.weight"]["zeros"] == 7 and s["layers"]["fc.bias"]["zeros"] == 2
    assert s["layers"]["conv.weight"]["zeros"] == 3
    assert "dead_units" not in s["layers"]["fc.bias"]
    assert (s["numel"], s["zeros"], s["nnz"]) == (16, 12, 4)
    # weights are rank >= 2 only: the bias's zeros must not count (9 + 4 entries, 7 + 3 zeros)
    assert (s["weight_numel"], s["weight_zeros"]) == (13, 10)
    assert s["weight_zero_fraction"] == pytest.approx(10 / 13)
    assert s["zero_fraction"] == pytest.approx(12 / 16)
    text = format_stats(s)
    assert "1/3" in text and "weights (rank >= 2)" in text


def test_model_stats_reads_parameters_not_buffers() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].weight[0, 0] = -0.0
        model[1].running_mean.zero_()  # a buffer: not counted
    s = model_stats(model)
    assert set(s["layers"]) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    assert s["weight_zeros"] == 6 and s["layers"]["0.weight"]["dead_units"] == 2
