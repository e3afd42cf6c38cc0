"""Spiking mode (paper Sec. 2.1, reference 2d): every rule q_i, q_j -> q_k fires as an AND of independent
Bernoulli spikes with Pr = rate; the average over seeds converges to the rate dynamics like 1/sqrt(samples)."""

import numpy as np

from bdh_graph import Network

n, T = 6, 3
rng = np.random.default_rng(11)
# Gx = 0 keeps X = x0 deterministic and Gy_i = 0 keeps (Ye - Yi)^+ = Ye: then every quantity is linear in
# independent spikes given the previous token, so E[spiking run] equals the rate run exactly (not just to
# first order) and the Monte-Carlo error is pure variance.
NET = Network.from_dense(
    Gx_e=np.zeros((n, n)),
    Gy_e=rng.uniform(0, 1, (n, n)) * (rng.random((n, n)) < 0.6),
    Gs=rng.uniform(0, 1, (n, n)),
    u=rng.uniform(0.5, 1, n),
    layers=1,
)
X0, Y0 = rng.uniform(0.2, 1, (T, n)), rng.uniform(0, 1, (T, n))
S0 = rng.uniform(0, 1, (1, n, n))


def spiking_run(seed):
    r = NET.run(X0, Y0, backend="numpy", sigma0=S0, spiking=True, seed=seed)
    return np.concatenate([r.y[:, 1].ravel(), r.sigma.ravel()])


def test_spikes_are_seeded_and_binary_for_rates():
    """Same seed, same run; another seed, another run; with rates in [0, 1] a gated y is a product of 0/1 spikes
    of X (rate x) and of a count of Ye spikes."""
    a, b, c = spiking_run(1), spiking_run(1), spiking_run(2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    r = NET.run(X0, Y0, backend="numpy", sigma0=S0, spiking=True, seed=3)
    assert np.all(r.y[:, 1] == np.round(r.y[:, 1]))  # spike counts


def test_spiking_average_converges_like_inverse_sqrt():
    """Average over S seeds -> rate dynamics (Eq. 6 on the same network); the error's log-log slope vs S is -1/2."""
    rate = NET.run(X0, Y0, backend="numpy", sigma0=S0)
    target = np.concatenate([rate.y[:, 1].ravel(), rate.sigma.ravel()])
    assert np.max(target[: T * n]) > 0.1  # y is not trivially zero
    S_max = 2048
    runs = np.stack([spiking_run(seed) for seed in range(S_max)])
    sizes = 2 ** np.arange(4, 10)  # at least 4 independent blocks per size
    # independent blocks where possible: error of the mean of block b of size S, averaged over blocks
    errs = []
    for S in sizes:
        blocks = runs[: (S_max // S) * S].reshape(S_max // S, S, -1).mean(axis=1)
        errs.append(np.mean(np.abs(blocks - target)))
    slope = np.polyfit(np.log(sizes), np.log(errs), 1)[0]
    assert abs(slope + 0.5) < 0.12, (slope, errs)
    assert errs[-1] < 0.1 * np.mean(np.abs(target))
