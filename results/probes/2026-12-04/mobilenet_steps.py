"""What each change of 2026-12-04 buys on torchvision mobilenet_v2 (90% random zeros, 224x224,
one thread), in one process, each variant its own copy of the converted model, interleaved (sparsify.timing.time_interleaved), against
onnxruntime's dense run of the same weights:

  converted     sparsify_inference_ as it now is (1x1 stride-1 convs read x in place,
                activations fused, raw-address conv calls)
  unfused       a copy with the fused ReLU6 modules put back and the clamps off
  checked_call  a copy of unfused whose SparseConv2d call the checked kernels.sparse_conv2d
                (geometry and argument checks per call), as before 2026-12-04
  copy_1x1      checked_call on a build with -DSPK_NO_DIRECT: every conv copies its input
                into the phase buffer first, as before 2026-12-04
  ort_dense     onnxruntime 1 thread, the dense model (BatchNorm folded by ORT itself)

usage: python mobilenet_steps.py BATCH [REPS]"""

import copy
import functools
import io
import sys
import types

import onnxruntime as ort
import torch
import torchvision

from sparsify import kernels as K
from sparsify.accel import SparseConv2d
from sparsify.accel.convert import sparsify_inference_
from sparsify.bench.sources import impose_density_
from sparsify.timing import cpu_snapshot, others_busy_cores, paired_ratio, time_interleaved

B = int(sys.argv[1]) if len(sys.argv) > 1 else 1
REPS = int(sys.argv[2]) if len(sys.argv) > 2 else 21
torch.set_num_threads(1)
torch.manual_seed(0)
m = torchvision.models.mobilenet_v2().eval()
impose_density_(m, 0.1)
x = torch.randn(B, 3, 224, 224)
buf = io.BytesIO()
torch.onnx.export(m, (x,), buf, opset_version=17, dynamo=False)
so = ort.SessionOptions()
so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
sess = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])
xn = x.numpy()
with torch.inference_mode():
    ref = m(x)
    rep = sparsify_inference_(m, x, threads=1)
print(
    f"# batch {B}, 1 thread, reps {REPS}; torch {torch.__version__}, onnxruntime "
    f"{ort.__version__}, kernels {K.info()['isa']}"
)
print(
    f"# converter: {rep.check}; whole model: {rep.whole}; {len(rep.fused)} fused, "
    f"{len(rep.folded)} batch norms folded"
)
copy_flags = tuple(K.info()["flags"].split()) + ("-DSPK_NO_DIRECT",)


def checked_forward(self, inp, flags=None):
    """SparseConv2d's kernel path as before 2026-12-04: the checked kernels.sparse_conv2d."""
    y = K.sparse_conv2d(
        self.weight_spk,
        inp.detach().numpy(),
        self.stride,
        self.padding,
        self.dilation,
        bias=self._spk_bias(),
        threads=1,
        _flags=flags,
    )
    return torch.from_numpy(y)


models = {"converted": m}
models["unfused"] = copy.deepcopy(m)
for pair in rep.fused:
    layer, act = pair.split(" <- ")
    models["unfused"].get_submodule(layer).fuse_clamp_(None)
    models["unfused"].set_submodule(act, torch.nn.ReLU6())
for mode, flags in (("checked_call", None), ("copy_1x1", copy_flags)):
    models[mode] = copy.deepcopy(models["unfused"])
    for mod in models[mode].modules():
        if isinstance(mod, SparseConv2d) and mod.weight_spk is not None:
            mod.forward = types.MethodType(functools.partial(checked_forward, flags=flags), mod)


def run(mode):
    net = models[mode]

    def f():
        with torch.inference_mode():
            return net(x)

    return f


outs = {}
for mode in ("converted", "unfused", "checked_call", "copy_1x1"):
    outs[mode] = run(mode)()
for mode, y in outs.items():
    assert torch.equal(y, outs["converted"]), mode
err = float((outs["converted"] - ref).abs().max())
fns = {k: run(k) for k in outs}
fns["ort_dense"] = lambda: sess.run(None, {sess.get_inputs()[0].name: xn})
snap = cpu_snapshot()
t = time_interleaved(fns, reps=REPS, warmup=2)
busy = others_busy_cores(snap, cpu_snapshot())
print(f"# max|converted - dense torch| = {err:.2e}; other cores busy during the run: {busy:.2f}")
print(
    f"{'variant':<14} {'median ms':>10} {'ort_dense / variant':>20}  (median of paired ratios, IQR)"
)
for k, v in t.items():
    r = paired_ratio(t["ort_dense"].samples, v.samples)
    print(f"{k:<14} {v.median * 1e3:10.2f} {r.median:20.2f}  ({r.q25:.2f}-{r.q75:.2f})")
