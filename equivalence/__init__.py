"""equivalence: compile a BDH-GPU tensor model into a BDH neuron graph and check that both compute the same thing.

The only package that imports both `bdh_gpu` (torch) and `bdh_graph` (numpy/numba/PyG). See docs/equivalence.md.

    from equivalence import compile_model, compare
    c = compile_model(model, "circuit")          # "dense" | "circuit" | "official" | None (default for the variant)
    print(c.summary())
    rep = compare(model, c, "hello world", backend="numba")
    assert rep.ok, rep
"""
from . import rules  # registers the `groupnorm` and `linear` rules with bdh_graph
from .compare import RTOL, CompareReport, QuantityError, as_ids, compare
from .compile import (APPLIES, COMPILES, Compiled, Weights, compile_circuit, compile_dense, compile_model,
                      compile_official, default_compile)
from .run import GraphRunner, TensorRunner

__all__ = [
    "compile_model", "compile_dense", "compile_circuit", "compile_official", "default_compile", "Compiled",
    "Weights", "COMPILES", "APPLIES", "compare", "CompareReport", "QuantityError", "RTOL", "as_ids",
    "GraphRunner", "TensorRunner", "graph_logits", "rules",
]


def graph_logits(model, ids, how=None, backend="numba", comm=None, device=None, progress=False):
    """(T, V) float64 logits of a token sequence computed by the compiled graph of `model` (sharded over `comm`:
    every rank returns them); progress=True draws a bar on stderr."""
    c = how if isinstance(how, Compiled) else compile_model(TensorRunner(model).model, how, comm=comm)
    return GraphRunner(c, backend, device=device).logits(as_ids(ids, model.config.vocab_size), progress=progress)
