"""What the probes of this folder share: their command line (--batch, --rounds), one thread,
a header line, and torchvision's mobilenet_v2 at 90% zeros with a 3x224x224 input."""

import argparse
import platform

import torch
import torchvision

from sparsify import kernels as K
from sparsify.bench.sources import impose_density_


def setup(rounds: int = 21) -> argparse.Namespace:
    """Parse --batch and --rounds, pin one thread, print the header line."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--rounds", type=int, default=rounds)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, kernels {K.info()['isa']}, {platform.processor() or 'cpu'}")
    return args


def mobilenet(batch: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """Seed 0: mobilenet_v2 (eval) with 90% of every weight zeroed, and a random batch."""
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2().eval()
    impose_density_(model, 0.1)
    return model, torch.randn(batch, 3, 224, 224)
