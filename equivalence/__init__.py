"""equivalence: compile a BDH-GPU tensor model into a BDH neuron graph and check that both compute the same thing.

The only package that imports both `bdh_gpu` (torch) and `bdh_graph` (numpy/numba/PyG). See docs/equivalence.md.

    from equivalence import compile_model, compare
    c = compile_model(model, "circuit")          # "dense" | "circuit" | "official" | None (default for the variant)
    print(c.summary())
    rep = compare(model, c, "hello world", backend="numba")
    assert rep.ok, rep
"""

import os

from . import rules  # registers the `linear` and `normalize` rules with bdh_graph
from .compare import GRAPH_RTOL, RTOL, CompareReport, QuantityError, Reference, as_ids, compare, tensor_reference
from .compile import (
    APPLIES,
    COMPILES,
    Compiled,
    Weights,
    compile_circuit,
    compile_dense,
    compile_model,
    compile_official,
    default_compile,
)
from .run import GraphRunner, TensorRunner

__all__ = [
    "compile_model",
    "compile_dense",
    "compile_circuit",
    "compile_official",
    "default_compile",
    "Compiled",
    "Weights",
    "COMPILES",
    "APPLIES",
    "compare",
    "CompareReport",
    "QuantityError",
    "RTOL",
    "GRAPH_RTOL",
    "as_ids",
    "GraphRunner",
    "TensorRunner",
    "graph_logits",
    "rules",
    "tensor_reference",
    "Reference",
]


def graph_logits(model, ids, how=None, backend="numba", comm=None, device=None, progress=False, dtype="float64"):
    """(T, V) float64 logits of a token sequence computed by the compiled graph of `model` (a bdh_gpu.BDH or a
    model directory: each rank then reads only its slice of the weights), sharded over `comm`: every rank
    returns them; progress=True draws a bar on stderr; dtype: the graph's (GraphRunner)."""
    if not isinstance(how, Compiled):
        how = compile_model(
            model if isinstance(model, (str, os.PathLike)) else TensorRunner(model).model, how, comm=comm
        )
    runner = GraphRunner(how, backend, device=device, dtype=dtype)
    return runner.logits(as_ids(ids, how.weights.V), progress=progress)
