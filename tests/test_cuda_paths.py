"""The device paths: the PyG graph and the tensor model on CUDA against their CPU references.

The CUDA tests skip without a device (the reason is printed by -ra); `python -m benchmarks.gpu_check` runs this file
on a GPU machine (with the PyG backend's other tests, which run on CUDA whenever one is present). The first test
checks on the CPU the edge order that the PyG backend builds for every device.
"""

import numpy as np
import pytest
import torch

from bdh_graph.network import SynapseGroup

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine (no GPU lent)")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _group(n_pre, n_post, targets_of):
    indices = [np.asarray(targets_of(s), dtype=np.int64) for s in range(n_pre)]
    indptr = np.concatenate([[0], np.cumsum([len(i) for i in indices])]).astype(np.int64)
    idx = np.concatenate(indices)
    return SynapseGroup("g", "a", "b", n_pre, n_post, indptr, idx, np.linspace(0.1, 1.0, len(idx)))


def test_target_major_order_without_a_sort_equals_the_sort():
    """The PyG backend keeps each group target-major (by target, then source) so that a send is one CSR product
    (Eq. 6's G x as a sparse matrix-vector product); for a complete group in order (Gs of Obs. 4) the permutation
    is formed as a transpose, which must equal the sort. A complete group listing targets out of order, and a
    sparse group, take the sort."""
    from bdh_graph.backends.pyg_backend import target_major

    rng = np.random.default_rng(0)
    cases = {
        "complete, in order": (_group(5, 7, lambda s: np.arange(7)), True),
        "complete, out of order": (_group(5, 7, lambda s: rng.permutation(7)), True),
        "sparse": (_group(6, 4, lambda s: np.sort(rng.choice(4, 1 + s % 3, replace=False))), False),
    }
    for name, (g, complete) in cases.items():
        perm, is_complete = target_major(g)
        assert is_complete == complete, name
        np.testing.assert_array_equal(perm, np.lexsort((g.source, g.indices)), err_msg=name)
        assert np.all(np.diff(g.indices[perm] * g.n_pre + g.source[perm]) > 0), name  # strictly target-major


def _eq6_run(net, backend, x0, y0, **kw):
    sim = net.simulator(backend=backend, **kw)
    xy = [sim.feed(x0[t], y0[t]) for t in range(len(x0))]
    return xy, sim.state, sim


@cuda
def test_pyg_on_cuda_equals_numba_on_the_eq6_graph():
    """Eq. 6 on the graph_bench network (Gs complete: the dense path; Gx, Gy sparse: the CSR path; u = 0.99):
    x, y of every layer and token and the synaptic state sigma after the run, PyG on CUDA vs numba, float64,
    to 1e-12 relative; the PyG state lives on the device."""
    from benchmarks import graph_bench as gb

    _, _, net = gb.build(256, 2)
    x0, y0 = gb.inputs(256, 5, 0.3)
    ref, ref_state, _ = _eq6_run(net, "numba", x0, y0)
    got, got_state, sim = _eq6_run(net, "pyg", x0, y0, device="cuda")
    assert all(v.device.type == "cuda" for v in sim._state.edges.values())
    for (xr, yr), (xg, yg) in zip(ref, got):
        for a, b in ((xg, xr), (yg, yr)):
            assert np.abs(b).max() > 0 and np.abs(a - b).max() <= 1e-12 * np.abs(b).max()
    for k, s in ref_state.edges.items():
        assert np.abs(s).max() > 0 and np.abs(got_state.edges[k] - s).max() <= 1e-12 * np.abs(s).max()


@cuda
def test_official_graph_on_cuda_equals_numba():
    """The official compile (RoPE: rotation damping, hubs with LayerNorm) of a tiny model: logits of every byte,
    PyG on CUDA vs numba, to 1e-9 relative (the equivalence's float64 tolerance); the logits are not ~0."""
    import equivalence
    from bdh_gpu import BDH, get_preset

    torch.manual_seed(0)
    model = BDH(get_preset("tiny")).eval()
    compiled = equivalence.compile_model(equivalence.TensorRunner(model).model, "official")
    ids = np.frombuffer(b"Hatchling!", dtype=np.uint8).astype(np.int64)
    ref = equivalence.GraphRunner(compiled, "numba").logits(ids)
    got = equivalence.GraphRunner(compiled, "pyg", device="cuda").logits(ids)
    assert np.abs(ref).max() > 1e-3
    assert np.abs(got - ref).max() <= 1e-9 * np.abs(ref).max()


@cuda
def test_tensor_model_on_cuda_equals_cpu_and_its_recurrent_form():
    """A tiny model in float64: the token-parallel forward on CUDA equals the CPU's (1e-10 relative), and the
    recurrent form on CUDA (Eq. 8, one token at a time) reproduces the forward's logits at every position."""
    from bdh_gpu import BDH, get_preset

    torch.manual_seed(0)
    cpu = BDH(get_preset("tiny")).double().eval()
    gpu = BDH(get_preset("tiny")).double().eval()
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.cuda()
    idx = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, got = cpu(idx), gpu(idx.cuda()).cpu()
        state, steps = gpu.init_state(2), []
        for t in range(idx.shape[1]):
            lg, state = gpu.step(idx[:, t].cuda(), state, sparse=False)
            steps.append(lg.cpu())
    scale = ref.abs().max()
    assert (got - ref).abs().max() <= 1e-10 * scale
    assert (torch.stack(steps, 1) - ref).abs().max() <= 1e-10 * scale


@cuda
def test_train_step_under_bf16_autocast_on_cuda():
    """The training step that benchmarks.gpu_check times (bf16 autocast, fused AdamW): it runs on CUDA, the loss
    is finite and falls over a few steps on one repeated batch."""
    from bdh_gpu import BDH, Attention, BDHConfig
    from benchmarks import gpu_throughput as gt

    torch.manual_seed(0)
    model = BDH(BDHConfig(n_head=2, d=32, N=64, n_layer=2, dropout=0.0), attention=Attention("chunked", 32)).cuda()
    first = gt.measure(model, list(model.parameters()), 64, 4, 1, 0, "cuda", True, False)
    later = gt.measure(model, list(model.parameters()), 64, 4, 20, 0, "cuda", True, False)
    assert np.isfinite(first["loss"]) and later["loss"] < first["loss"]
    assert first["tokens_per_s"] > 0 and first["peak_mem_gib"] > 0
