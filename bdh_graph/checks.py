"""One-line argument checks on arrays, shared by the network (weights, u, theta) and the simulator (inputs)."""

import numpy as np

from .errors import GraphError


def check_finite(name, a):
    if not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(np.asarray(a)))[0]
        raise GraphError(
            f"{name}: expected finite values, got {np.asarray(a)[tuple(bad)]} at index {tuple(bad.tolist())}"
        )


def as_inputs(name, a, T, n):
    """`a` as float64 of shape (n,) (T None) or (T, n), finite; one-line GraphError otherwise."""
    a = np.asarray(a, dtype=np.float64)
    expect = (n,) if T is None else (T, n)
    if a.shape != expect:
        raise GraphError(
            f"{name}: expected shape {expect} ({'n' if T is None else '(T, n)'} with n = {n}), got {a.shape}"
        )
    check_finite(name, a)
    return a
