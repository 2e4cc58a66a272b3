"""Prototype: L1 prox with a per-row threshold t * mean|w_row| (scale-equivariant per neuron)."""
import sys, torch
from sparsify.penalties import prox
from sparsify.cli import main

@torch.no_grad()
def apply_(self, params, coeff):
    for w in params:
        if w.ndim < 2:
            prox.soft_threshold_([w], coeff); continue
        m = w.abs().flatten(1).mean(1).view(-1, *([1] * (w.ndim - 1)))
        t = m * coeff
        w.sub_(torch.clamp(w, min=-t, max=t))
prox.L1Prox.apply_ = apply_
sys.exit(main(sys.argv[1:]))
