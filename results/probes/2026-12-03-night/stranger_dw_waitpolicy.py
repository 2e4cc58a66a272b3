import collections
import copy
import os
import sys

import torch
import torchvision

if sys.argv[1] == "ours":
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # after torch's pool read its env
from sparsify.accel.convert import sparsify_inference_
from sparsify.bench.sources import impose_density_

torch.manual_seed(0)
dense = torchvision.models.efficientnet_b0().eval()
impose_density_(dense, 0.1)
torch.set_num_threads(2)
x = torch.randn(3, 3, 160, 192)
m = copy.deepcopy(dense)
with torch.inference_mode():
    rep = sparsify_inference_(m, x, threads=2)
rs = [d.reason for d in rep.layers if d.reason.startswith("reverted")]
print(
    sys.argv[1],
    collections.Counter(d.reason.split(":")[0] for d in rep.layers),
    rs[0][:80] if rs else "",
    rep.check[:60] if isinstance(rep.check, str) else "",
)
