"""Zeros are zeros: the -0.0 that ``torch.nn.utils.prune`` + ``prune.remove`` (or any
``w * mask``) leaves counts as a zero and is stored as +0.0 on every path: stats, checkpoint,
scipy bundle, ONNX compact and sparse_initializer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn
from torch.nn.utils import prune

from sparsify.export import onnx as ox
from sparsify.export.scipy_bundle import export_scipy_bundle, load_state_dict
from sparsify.pipeline.checkpoint import checkpoint_from_module, load_checkpoint
from sparsify.stats import model_stats, state_dict_stats


def _convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 7 * 7, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    ).eval()


def _pruned(how: str) -> nn.Module:
    model = _convnet()
    layers = [model[0], model[4], model[6]]
    if how == "prune":
        for m in layers:
            prune.l1_unstructured(m, "weight", amount=0.9)
            prune.remove(m, "weight")  # weight = weight_orig * mask: -0.0 where w < 0
    else:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for m in layers:
                m.weight.mul_(torch.rand(m.weight.shape, generator=g) >= 0.9)
    return model


WEIGHTS = ("0.weight", "4.weight", "6.weight")


@pytest.mark.parametrize("how", ["prune", "mask"])
def test_negative_zeros_are_zeros_everywhere(how: str, tmp_path: Path) -> None:
    model = _pruned(how)
    state = model.state_dict()
    true_nnz = {n: int(torch.count_nonzero(state[n])) for n in WEIGHTS}
    neg = sum(int((torch.signbit(state[n]) & (state[n] == 0)).sum()) for n in WEIGHTS)
    assert neg > 1000, "the starting point must hold many -0.0"
    for n in WEIGHTS:  # ~90% zeros
        assert true_nnz[n] <= 0.11 * state[n].numel()

    # stats count by value
    stats = model_stats(model)
    assert stats["weight_numel"] - stats["weight_zeros"] == sum(true_nnz.values())

    # checkpoint: +0.0 on disk, same stats
    checkpoint_from_module(tmp_path / "ck", model, (3, 16, 16))
    saved = load_checkpoint(tmp_path / "ck").state_dict
    for n in WEIGHTS:
        z = saved[n] == 0
        assert int(z.logical_not().sum()) == true_nnz[n] and not torch.signbit(saved[n][z]).any()
    assert state_dict_stats(saved)["weight_zeros"] == stats["weight_zeros"]

    # scipy bundle: nnz/density from the true zeros, byte for byte the bundle of +0.0 zeros
    positive = _pruned(how)
    with torch.no_grad():
        for p in positive.parameters():
            p.add_(0.0)
    m_neg = export_scipy_bundle(model, tmp_path / "neg", codec="none")
    m_pos = export_scipy_bundle(positive, tmp_path / "pos", codec="none")
    by_name = {t["name"]: t for t in m_neg["tensors"]}
    for n in WEIGHTS:
        assert by_name[n]["nnz"] == true_nnz[n]
        assert by_name[n]["density"] == pytest.approx(true_nnz[n] / state[n].numel())
    assert (tmp_path / "neg" / "arrays.bin").read_bytes() == (
        tmp_path / "pos" / "arrays.bin"
    ).read_bytes()
    assert (
        json.loads((tmp_path / "neg" / "manifest.json").read_text())["tensors"] == m_pos["tensors"]
    )
    for n, t in load_state_dict(tmp_path / "neg").items():
        assert torch.equal(t, state[n])  # equal as numbers

    # ONNX: compact and sparse_initializer store exactly the true nonzeros
    x = torch.randn(2, 3, 16, 16)
    dense = ox.export_dense_model(model, x[:1])
    compact, choices = ox.compact_model(dense)
    nnz = {c.name: c.nnz for c in choices}
    for n in WEIGHTS:
        assert nnz[n] == true_nnz[n], n
    sparse = ox.sparse_initializer_model(dense)
    stored = {
        numpy_helper.to_array(st.values).size
        for st in sparse.graph.sparse_initializer
        if st.values.name in WEIGHTS
    }
    assert stored == set(true_nnz.values())
    with torch.no_grad():
        want = model(x).numpy()
    for proto in (compact, sparse):
        session = ort.InferenceSession(
            proto.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        np.testing.assert_allclose(
            session.run(None, {ox.INPUT_NAME: x.numpy()})[0], want, atol=1e-5
        )
