"""A small random model for the viewer tests (imported by them like tests/mpi_harness.py)."""

import torch

import bdh_gpu


def small_model(variant="official", seed=0):
    """h=2, d=8, N=16, L=2, float32. official/paper: weights ~ N(0, 0.3^2) (LN inputs far from zero); normfree:
    its own init, whose gains keep Eq. 7's products O(1)."""
    torch.manual_seed(seed)
    m = bdh_gpu.BDH(bdh_gpu.BDHConfig(n_head=2, d=8, N=16, n_layer=2, dropout=0.0, variant=variant))
    if variant != "normfree":
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0, 0.3)
    return m
