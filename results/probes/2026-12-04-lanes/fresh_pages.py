"""What a fresh large output costs against a reused one: torch.empty of resnet18's stem output
at batch 16 (16x64x112x112 float32, 51 MB) followed by a fill, against the same fill of a
tensor kept from before; and the same at 8 MB (under glibc's mmap threshold once it has
adapted). Medians of 7, one thread.

    .venv/bin/python results/probes/2026-12-04-lanes/fresh_pages.py
"""

import time

import torch

torch.set_num_threads(1)


def median_ms(f, n: int = 7) -> float:
    f()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[n // 2] * 1e3


print(f"# fresh_pages.py ({time.strftime('%H:%M UTC', time.gmtime())}), torch {torch.__version__}")
for shape in ((16, 64, 112, 112), (4, 32, 112, 112)):
    mb = 4 * torch.Size(shape).numel() / 1e6
    kept = torch.empty(shape)
    fresh = median_ms(lambda s=shape: torch.empty(s).fill_(1.0))
    reuse = median_ms(lambda k=kept: k.fill_(1.0))
    print(
        f"{str(shape):20s} {mb:5.1f} MB: empty + fill {fresh:6.2f} ms, fill of a kept tensor {reuse:6.2f} ms"
    )
