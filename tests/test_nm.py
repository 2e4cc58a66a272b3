"""N:M projection: the pattern holds, the largest survive, the hook alone and after L1 prox."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsify import L1Prox, SparsifyError, penalize_, soft_threshold
from sparsify.accel.semi_structured import semi_structured_fits, to_semi_structured_
from sparsify.penalties import NMProjection, check_nm, nm_project_, penalty_from_dict
from sparsify.penalties.nm import nm_mask


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (4, 8)])
@pytest.mark.parametrize("shape", [(6, 16), (5, 4, 2, 2)])
def test_projection_keeps_the_n_largest_of_every_m(n: int, m: int, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    w = torch.randn(shape)
    assert not check_nm(w, n, m)  # dense Gaussian weights are not N:M
    p = w.clone()
    nm_project_([p], n, m)
    assert check_nm(p, n, m)
    groups_w = w.reshape(shape[0], -1, m)
    groups_p = p.reshape(shape[0], -1, m)
    assert ((groups_p != 0).sum(-1) == n).all()  # no ties in Gaussian data: exactly n kept
    # the survivors are the n largest magnitudes of each group, unchanged
    top = groups_w.abs().sort(dim=-1, descending=True).values[..., :n]
    kept = groups_p.abs().sort(dim=-1, descending=True).values[..., :n]
    assert torch.equal(top, kept)
    assert torch.equal(p[p != 0], w[p != 0])
    assert not torch.signbit(p[p == 0]).any()  # written as +0.0


def test_check_nm_counts_at_most_n_and_rejects_bad_layouts() -> None:
    w = torch.tensor([[1.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 3.0]])
    assert check_nm(w, 2, 4) and check_nm(w, 1, 4) is False
    assert not check_nm(torch.ones(8), 2, 4)  # a bias has no N:M layout
    assert not check_nm(torch.zeros(3, 6), 2, 4)  # 6 inputs: no whole groups of 4
    with pytest.raises(SparsifyError, match="multiple of 4"):
        nm_mask(torch.ones(3, 6))
    with pytest.raises(SparsifyError, match="1 <= n <= m"):
        NMProjection(n=5, m=4)
    with pytest.raises(SparsifyError, match="integers"):
        check_nm(w, 2.0, 4)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def _step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    x, y = torch.randn(32, 8), torch.randint(0, 4, (32,))
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def test_hook_alone_keeps_2_4_after_every_step() -> None:
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    handle = penalize_(model, opt, NMProjection())
    torch.manual_seed(1)
    for _ in range(5):
        _step(model, opt)
        assert check_nm(model[0].weight) and check_nm(model[2].weight)
    assert (model[0].bias != 0).all()  # biases are outside the scope: untouched
    handle.remove()
    _step(model, opt)
    assert not check_nm(model[0].weight), "detached: Adam refills the pruned weights"


def test_after_l1_prox_in_registration_order() -> None:
    model, twin = _model(), _model()
    opt, twin_opt = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, twin))
    penalize_(model, opt, L1Prox(lam=0.01))
    penalize_(model, opt, NMProjection(n=2, m=4))
    for _ in range(3):
        torch.manual_seed(2)
        _step(model, opt)
        torch.manual_seed(2)
        _step(twin, twin_opt)
        with torch.no_grad():
            for name, p in twin.named_parameters():
                if name.endswith("weight"):
                    p.copy_(soft_threshold(p, 0.01))
                    nm_project_([p])
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert check_nm(model[0].weight)


def test_selection_that_cannot_be_grouped_is_named() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 5), nn.Flatten(), nn.Linear(4 * 24 * 24, 8))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(SparsifyError, match=r"0\.weight \(4, 1, 5, 5\)"):
        penalize_(model, opt, NMProjection())  # refused when attached, naming the layer
    ok = penalize_(model, opt, NMProjection(exclude=[r"^0\."]))
    ok.config.validate_selection(ok.selected)
    with pytest.raises(SparsifyError, match="'scope' parameter of NMProjection"):
        NMProjection(scope="all")
    cfg = NMProjection(n=1, m=8, exclude=["x"])
    assert penalty_from_dict(cfg.to_dict()) == cfg
    assert float(cfg.value([torch.ones(2, 8)], 1.0)) == 14  # weights outside the 1:8 set


def test_semi_structured_shape_rules() -> None:
    assert semi_structured_fits((128, 256), torch.float16) is None
    assert semi_structured_fits((10, 256), torch.float16) is not None  # 10 rows: too few
    assert semi_structured_fits((4, 4, 4), torch.float16) is not None
    assert semi_structured_fits((128, 128), torch.float64) is not None
    # the rule is torch's own table, for the backend torch picks (cuSPARSELt unless forced)
    from torch.sparse import SparseSemiStructuredTensor
    from torch.sparse.semi_structured import (
        SparseSemiStructuredTensorCUSPARSELT,
        SparseSemiStructuredTensorCUTLASS,
    )

    cls = (
        SparseSemiStructuredTensorCUTLASS
        if SparseSemiStructuredTensor._FORCE_CUTLASS
        else SparseSemiStructuredTensorCUSPARSELT
    )
    for dtype, lim in cls._DTYPE_SHAPE_CONSTRAINTS.items():
        r, c = lim.sparse_min_rows, lim.sparse_min_cols
        assert semi_structured_fits((r, c), dtype) is None
        assert semi_structured_fits((3 * r, 2 * c), dtype) is None
        assert semi_structured_fits((r + 1, c), dtype) is not None
        assert semi_structured_fits((r, c + 1), dtype) is not None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_semi_structured_refuses_without_cuda() -> None:
    with pytest.raises(SparsifyError, match="CUDA"):
        to_semi_structured_(_model())
    with pytest.raises(SparsifyError, match="float16 or bfloat16"):
        to_semi_structured_(_model(), dtype=torch.float32)


def test_semi_structured_shapes_are_checked_for_the_backend_asked_for() -> None:
    # (16, 64) bf16 fits cuSPARSELt's (16, 16) minimum, not CUTLASS's (32, 64)
    assert semi_structured_fits((16, 64), torch.bfloat16, "cusparselt") is None
    assert "multiple of (32, 64)" in semi_structured_fits((16, 64), torch.bfloat16, "cutlass")


def test_semi_structured_names_its_backends() -> None:
    with pytest.raises(SparsifyError, match="'backend' parameter of to_semi_structured_"):
        to_semi_structured_(_model(), backend="cublas")


@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0),
    reason="2:4 semi-structured kernels need a CUDA GPU of compute capability >= 8.0",
)
@pytest.mark.parametrize("backend", ["default", "cusparselt", "cutlass"])
def test_semi_structured_matches_dense_on_cuda(backend: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)).cuda()
    nm_project_([model[0].weight, model[2].weight])
    x = torch.randn(64, 256, device="cuda")
    dense = model.to(torch.bfloat16)(x.bfloat16()).float()
    if backend == "cutlass" and torch.cuda.get_device_capability()[0] != 8:
        with pytest.raises(SparsifyError, match="compute capability 8.x only"):
            to_semi_structured_(model, torch.bfloat16, backend)  # measured: torch raises on 9.0
        return
    report = to_semi_structured_(model, torch.bfloat16, backend)
    assert report["0"] == "converted" and report["2"].startswith("skipped")  # 10 rows: too few
    out = model(x.bfloat16()).float()
    torch.testing.assert_close(out, dense, rtol=2e-2, atol=2e-2)
