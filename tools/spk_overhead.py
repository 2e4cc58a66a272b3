"""Per-call overhead of sparsify's C kernels (``spk``) against torch dense on small layers.

    python tools/spk_overhead.py                    # ~15 s on one core
    python tools/spk_overhead.py --threads 1 --reps 7 --density 0.1

Times, interleaved (sparsify.timing.time_interleaved), the dense layer, the converter's
spk replacement (``make_sparse(layer, kernel)``, ``spk_csr`` for a Linear at one row per
call as the cost model picks) and its torch_csr one (the fallback without a C compiler) on a ladder of Linear and Conv2d layers from a few hundred
FLOPs to tens of MFLOPs per call, at ``--density``. Prints one row per layer: dense FLOPs
per call (2 * out * in * rows, a conv's rows being batch * output positions), the times and
t_dense / t_kernel. Where that ratio stays below 1 at a density the break-even table accepts,
the call's fixed cost (Python dispatch, packing the input, the conv's stride phases) is
what decides: the cost model's MIN_SPK_FLOPS (sparsify/accel/convert.py) is read off here.
Nothing is written; the numbers belong in that constant's comment.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see tools/bench_kernels.py

import torch
from torch import nn

from sparsify.accel.layers import make_sparse, spk_unavailable_reason
from sparsify.bench.sources import impose_density_
from sparsify.timing import fmt_seconds, time_interleaved, torch_threads

# (label, layer, input shape): tiny to mid-sized, the 7x24 Linear and 24x5x3x3 conv included
LINEARS = [(24, 7), (64, 64), (128, 128), (256, 256), (512, 512), (1024, 1024)]
CONVS = [  # (out, in, k, hw)
    (24, 5, 3, 8),
    (24, 5, 3, 28),
    (32, 16, 3, 14),
    (64, 32, 3, 14),
    (64, 64, 3, 28),
]


def cases(batches: list[int]) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """The ladder of (label, dense layer, input shape)."""
    out = []
    for b in batches:
        for n_in, n_out in LINEARS:
            out.append((f"Linear {n_out}x{n_in} b{b}", nn.Linear(n_in, n_out), (b, n_in)))
        for o, i, k, hw in CONVS:
            out.append(
                (f"Conv {o}x{i}x{k}x{k} @{hw}² b{b}", nn.Conv2d(i, o, k, padding=1), (b, i, hw, hw))
            )
    return out


def flops(layer: nn.Module, shape: tuple[int, ...]) -> int:
    """Dense FLOPs per call: 2 * weight entries * rows (a conv: rows = batch * positions)."""
    if isinstance(layer, nn.Linear):
        return 2 * layer.weight.numel() * shape[0]
    return 2 * layer.weight.numel() * shape[0] * shape[2] * shape[3]  # padding=1, stride 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--density", type=float, default=0.1)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=7)
    args = p.parse_args(argv)
    why = spk_unavailable_reason()
    if why is not None:
        print(f"spk unavailable: {why}")
        return 1
    torch.manual_seed(0)
    print(f"density {args.density}, {args.threads} thread(s), medians of {args.reps}")
    print(
        f"{'layer':<28} {'dense FLOPs':>12} {'dense':>10} {'spk':>10} {'dense/spk':>9} "
        f"{'torch_csr':>10} {'dense/csr':>9}"
    )
    with torch_threads(args.threads), torch.inference_mode():
        for label, layer, shape in cases(args.batches):
            layer.eval()
            impose_density_(layer, args.density)
            linear_row = isinstance(layer, nn.Linear) and shape[0] == 1
            rows = shape[0] if isinstance(layer, nn.Linear) else shape[0] * shape[2] * shape[3]
            spk = make_sparse(layer, "spk_csr" if linear_row else "spk", rows)
            csr = make_sparse(layer, "torch_csr", rows)
            x = torch.randn(shape)
            runs = {"dense": layer, "spk": spk, "csr": csr}
            for m in (spk, csr):
                torch.testing.assert_close(m(x), layer(x), rtol=1e-4, atol=1e-4)
            t = time_interleaved(
                {name: (lambda m=m, x=x: m(x)) for name, m in runs.items()},
                reps=args.reps,
                min_sample_s=2e-3,
            )
            d, s, c = t["dense"].median, t["spk"].median, t["csr"].median
            print(
                f"{label:<28} {flops(layer, shape):>12,} {fmt_seconds(d):>10} "
                f"{fmt_seconds(s):>10} {d / s:>9.2f} {fmt_seconds(c):>10} {d / c:>9.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
