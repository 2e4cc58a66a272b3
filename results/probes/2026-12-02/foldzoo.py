import torch, torchvision, time
from sparsify.accel.fold import fold_batchnorm_
torch.manual_seed(0)
for name in ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x0_5", "googlenet", "densenet121", "regnet_y_400mf", "mnasnet0_5", "convnext_tiny", "resnext50_32x4d"]:
    kw = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    m = getattr(torchvision.models, name)(**kw).eval()
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.3, 0.3); mod.running_var.uniform_(0.5, 1.5)
            mod.weight.data.uniform_(0.5, 1.5); mod.bias.data.uniform_(-0.2, 0.2)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad(): ref = m(x)
    nbn = sum(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.modules())
    t = time.perf_counter(); f = fold_batchnorm_(m); t = time.perf_counter() - t
    with torch.no_grad(): y = m(x)
    print(f"{name:22s} BN {nbn:3d} folded {len(f):3d} in {t*1e3:.0f} ms  max|diff| {(y-ref).abs().max().item():.2e} (|ref| {ref.abs().max().item():.2e})")
