"""A stranger's model through the converter's spk layers after the kernel change: odd widths
(none a multiple of 16), a 1-row output, batches that leave partial vector blocks, a
bias-free layer, an all-zero layer, and inputs with NaN in one image (it must stay in that
image's row of the output). Outputs (the 17-wide layer's and the all-zero 1-row layer's,
side by side) against torch dense in float64.

    python results/probes/2026-12-03-pm/stranger/odd_shapes.py
"""

import torch
from torch import nn

from sparsify.accel import sparsify_inference_

torch.manual_seed(0)


class Odd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(37, 113)
        self.b = nn.Linear(113, 250, bias=False)
        self.c = nn.Linear(250, 17)
        self.z = nn.Linear(17, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c(torch.relu(self.b(torch.relu(self.a(x)))))
        return torch.cat([h, self.z(torch.relu(h))], dim=1)  # 17 features, then the 1-row layer


for threads, batch in [(t, b) for t in (1, 2) for b in (2, 15, 17, 33, 130)]:
    torch.set_num_threads(threads)
    m = Odd().eval()
    with torch.no_grad():
        for lin in (m.a, m.b, m.c):
            lin.weight[torch.rand_like(lin.weight) > 0.2] = 0
        m.z.weight.zero_()
    ref64 = Odd().double().eval()
    ref64.load_state_dict({k: v.double() for k, v in m.state_dict().items()})
    x = torch.randn(batch, 37)
    rep = sparsify_inference_(
        m, x, mode="fixed", kernels=("spk",), max_density=1.0, verify=False, threads=threads
    )
    kinds = sorted({d.chosen for d in rep.layers})
    with torch.inference_mode():
        y = m(x)
        x_nan = x.clone()
        x_nan[batch // 2, 3] = float("nan")
        y_nan = m(x_nan)
    ref = ref64(x.double()).float()
    err = (y - ref).abs().max().item()
    bad_rows = torch.isnan(y_nan).any(dim=1).nonzero().flatten().tolist()
    print(
        f"{threads} thread(s), batch {batch:3d}: layers {kinds}, max |y - ref| {err:.2e}, "
        f"NaN image {batch // 2} -> NaN rows {bad_rows}"
    )
    assert err < 1e-5 and bad_rows in ([], [batch // 2]), (err, bad_rows)
print("ok")
