"""Eq. 6 evaluated directly with dense NumPy: the slow truth that every backend is tested against.

No kernel, no rounds, no graph: the three lines of Eq. 6 per token t and layer l,

    sigma_{t,l} = (sigma_{t-1,l} + (y_{t,l-1} x_{t,l}^T) ⊙ Gs) U
    x_{t,l}     = x_{t,l-1} + ((Gx_e - Gx_i) y_{t,l-1})^+
    y_{t,l}     = ((Gy_e - Gy_i) sigma_{t-1,l} x_{t,l})^+ ⊙ x_{t,l}

with `U = diag(u) R(theta)` as in bdh_graph.network (per-synapse u: `sigma <- (sigma * u) @ R`).
"""

import numpy as np


def rotation_matrix(n, theta):
    """R: block diagonal, [[cos t_m, -sin t_m], [sin t_m, cos t_m]] on the pair (2m, 2m+1); I when theta is None."""
    R = np.eye(n)
    if theta is not None:
        for m, t in enumerate(np.asarray(theta, dtype=np.float64)):
            R[2 * m : 2 * m + 2, 2 * m : 2 * m + 2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    return R


def apply_U(sigma, u=None, theta=None):
    """sigma U with U = diag(u) R(theta); u per key (n,), per synapse (n, n), or None (= 1)."""
    n = sigma.shape[1]
    s = sigma if u is None else sigma * (np.asarray(u)[None, :] if np.ndim(u) == 1 else np.asarray(u))
    return s if theta is None else s @ rotation_matrix(n, theta)


def eq6(
    x0,
    y0,
    Gx_e,
    Gx_i=None,
    Gy_e=None,
    Gy_i=None,
    Gs=None,
    u=None,
    theta=None,
    layers=1,
    sigma0=None,
    shared_sigma=False,
    damping="eq6",
    hebbian_orientation="eq6",
):
    """Dense Eq. 6. x0, y0: (T, n) boundary inputs. Returns x, y (T, L+1, n) and sigma (L or 1, n, n).

    damping="table1" runs the printed order (read, damp, write); hebbian_orientation="printed" writes
    `sigma[a, b] += x[a] y[b]` (the transpose, reference 2a). Shared sigma: one matrix, used by every layer in
    turn (each layer reads, writes and damps it).
    """
    x0, y0 = np.asarray(x0, dtype=np.float64), np.asarray(y0, dtype=np.float64)
    T, n = x0.shape
    z = np.zeros((n, n))
    Gx = np.asarray(Gx_e) - (z if Gx_i is None else np.asarray(Gx_i))
    Gy = (z if Gy_e is None else np.asarray(Gy_e)) - (z if Gy_i is None else np.asarray(Gy_i))
    Gs = np.ones((n, n)) if Gs is None else np.asarray(Gs, dtype=np.float64)
    Ls = 1 if shared_sigma else layers
    sigma = np.zeros((Ls, n, n)) if sigma0 is None else np.array(sigma0, dtype=np.float64)
    xs, ys = np.zeros((T, layers + 1, n)), np.zeros((T, layers + 1, n))
    relu = lambda v: np.maximum(v, 0.0)
    for t in range(T):
        x, y = x0[t], y0[t]
        xs[t, 0], ys[t, 0] = x, y
        for l in range(layers):
            k = 0 if shared_sigma else l
            x = x + relu(Gx @ y)  # x_{t,l}
            a = sigma[k] @ x  # sigma_{t-1,l} x_{t,l}
            w = (np.outer(y, x) if hebbian_orientation == "eq6" else np.outer(x, y)) * Gs
            if damping == "eq6":
                sigma[k] = apply_U(sigma[k] + w, u, theta)  # (sigma + y x^T ⊙ Gs) U
            else:
                sigma[k] = apply_U(sigma[k], u, theta) + w  # read, damp, write
            y = relu(Gy @ a) * x  # y_{t,l}
            xs[t, l + 1], ys[t, l + 1] = x, y
    return xs, ys, sigma
