"""A stranger's depthwise-heavy model through the converter after the stencil rewrite:
torchvision's efficientnet_b0 (5x5 and 3x3 depthwise convs, strides 1 and 2, SiLU,
squeeze-excitation), 90% zeros imposed, a non-square 3x160x192 input, batch 1 and 3, one
and two threads. Checks the converted model's output against the dense model's and times
both (interleaved medians).

    .venv/bin/python results/probes/2026-12-03-night/stranger_dw.py
"""

from __future__ import annotations

import copy
import time

import torch
import torchvision

from sparsify.accel.convert import sparsify_inference_
from sparsify.bench.sources import impose_density_


def median_ms(fn, reps: int = 7) -> float:
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2] * 1e3


def main() -> None:
    torch.manual_seed(0)
    dense = torchvision.models.efficientnet_b0().eval()
    impose_density_(dense, 0.1)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for batch in (1, 3):
            x = torch.randn(batch, 3, 160, 192)
            model = copy.deepcopy(dense)
            with torch.inference_mode():
                rep = sparsify_inference_(model, x, threads=threads)
                chosen = [d.chosen for d in rep.layers]
                dw = sum(c == "spk_depthwise" for c in chosen)
                sparse = sum(c not in ("dense", "spk_depthwise") for c in chosen)
                ref, out = dense(x), model(x)
                err = (out - ref).abs().max().item()
                scale = ref.abs().max().item()
                same = bool((out.argmax(1) == ref.argmax(1)).all())
                t_dense = median_ms(lambda x=x: dense(x))
                t_conv = median_ms(lambda x=x, m=model: m(x))
                t_dense = median_ms(lambda x=x: dense(x))  # again, after: drift hits both
            print(
                f"threads {threads} batch {batch}: {len(chosen)} layers, {sparse} sparse, "
                f"{dw} on the stencil; max |diff| {err:.2e} (output scale {scale:.2e}), "
                f"same argmax {same}; dense {t_dense:.1f} ms, converted {t_conv:.1f} ms "
                f"({t_dense / t_conv:.2f}x); check: {rep.check}"
            )


if __name__ == "__main__":
    main()
