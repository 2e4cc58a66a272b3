import collections
import copy

import torch
import torchvision

from sparsify.accel.convert import sparsify_inference_
from sparsify.bench.sources import impose_density_

torch.manual_seed(0)
dense = torchvision.models.efficientnet_b0().eval()
impose_density_(dense, 0.1)
for threads, batch in ((1, 1), (2, 3)):
    torch.set_num_threads(threads)
    x = torch.randn(batch, 3, 160, 192)
    m = copy.deepcopy(dense)
    with torch.inference_mode():
        rep = sparsify_inference_(m, x, threads=threads)
    print(
        threads,
        batch,
        collections.Counter(d.reason.split(":")[0] for d in rep.layers),
        rep.unavailable if hasattr(rep, "unavailable") else "",
    )
    for d in [d for d in rep.layers if d.reason.startswith("reverted")][:2]:
        print("  ", d.name, d.chosen, d.reason[:400])
