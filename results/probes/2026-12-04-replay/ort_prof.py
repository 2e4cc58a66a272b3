# ORT per-node kernel times (dense mobilenet_v2, 90% zeros, 3x224x224, one thread, medians of 60 runs):
# PYTHONPATH=. .venv/bin/python results/probes/2026-12-04-replay/ort_prof.py
import json, glob, os, collections, torch, torchvision, onnxruntime as ort, numpy as np
from sparsify.bench.sources import impose_density_
torch.manual_seed(0)
m = torchvision.models.mobilenet_v2().eval(); impose_density_(m, 0.1)
x = torch.randn(1, 3, 224, 224)
torch.onnx.export(m, x, "/tmp/mb.onnx", opset_version=17, dynamo=False)
so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.enable_profiling = True
so.profile_file_prefix = "/tmp/ortprof"
s = ort.InferenceSession("/tmp/mb.onnx", so, providers=["CPUExecutionProvider"])
xi = x.numpy()
for _ in range(60): s.run(None, {s.get_inputs()[0].name: xi})
f = s.end_profiling()
ev = json.load(open(f))
d = collections.defaultdict(list)
for e in ev:
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
        d[e["name"][:-12]].append(e["dur"])
rows = sorted(((np.median(v), k) for k, v in d.items()), reverse=True)
tot = sum(r[0] for r in rows)
for t, k in rows[:45]: print(f"{t:8.1f} us {k}")
print("total", tot)
