"""Run `bdh` command lines in one process under an address-space limit, so that a size the memory budget misses
fails here (MemoryError) instead of taking the machine's memory (imported and run by tests/test_budget.py).

    python tests/limited_child.py LIMIT_BYTES CASES.json   # CASES: a list of argv lists

Prints one JSON line per case: {"argv", "rc", "err" (stderr), "traceback" (a bug escaped), "hwm" (VmHWM, bytes)}.
Each case runs `bdh.cli.main` in-process with stderr captured; an exception that escapes it is a bug (rc 1).
"""

import contextlib
import io
import json
import resource
import sys
import traceback


def hwm() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def run_case(argv) -> dict:
    from bdh.cli import main

    err, tb = io.StringIO(), None
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except BaseException:  # noqa: BLE001 (a bug: the CLI let an exception through)
            rc, tb = 1, traceback.format_exc()
    return {"argv": argv, "rc": rc, "err": err.getvalue(), "traceback": tb, "hwm": hwm()}


def main() -> int:
    limit = int(sys.argv[1])
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if sys.argv[2] == "--fuzz":
        return fuzz(int(sys.argv[3]), sys.argv[4])
    with open(sys.argv[2]) as f:
        cases = json.load(f)
    for argv in cases:
        print(json.dumps(run_case(argv)), flush=True)
    return 0


# ---- the fuzz of config.json (tests/test_budget.py) ---------------------------------------------------------


def fuzz(examples: int, root: str) -> int:
    """Hypothesis draws config.json fields; generate and eval on each must succeed or end in exit 2, one line."""
    import os

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    size = st.one_of(
        st.integers(1, 12),
        st.sampled_from([0, -1, 2**31, 2**40, 10**9, 10**18]),
        st.sampled_from([1.5, "8", None, True, [], {}]),
    )
    fields = st.fixed_dictionaries(
        {},
        optional={
            "n_head": size,
            "d": size,
            "N": st.one_of(size, st.sampled_from([2, 16, 64])),
            "n_layer": size,
            "vocab_size": st.one_of(size, st.sampled_from([2, 98, 256, 257])),
            "dropout": st.sampled_from([0.0, 0.5, 1.0, -0.1, float("nan"), "x"]),
            "U": st.sampled_from(["rope", "alibi", "none", "spiral", 3]),
            "variant": st.sampled_from(["official", "paper", "normfree", "other"]),
            "rope_theta": st.sampled_from([2.0, 1.0, 1e300, -5.0]),
            "gains": st.sampled_from([None, {}, {"E": 2.0}, {"E": 0.0}, {"Q": 1.0}, [1]]),
            "extra": st.just(1),
        },
    )
    count, codes = [0], {}

    @settings(
        max_examples=examples, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(fields)
    def check(f):
        d = fuzz_dir(os.path.join(root, f"f{count[0]}"), f)
        count[0] += 1
        for argv in (
            ["generate", d, "--prompt", "ab", "--tokens", "3"],
            ["eval", d, "--data", "recall:2", "--block-size", "16", "--batch-size", "2", "--max-batches", "1"],
        ):
            res = run_case(argv)
            codes[res["rc"]] = codes.get(res["rc"], 0) + 1
            assert res["traceback"] is None, (f, argv, res["traceback"])
            err = res["err"].strip()
            assert res["rc"] == 0 or (res["rc"] == 2 and err and "\n" not in err), (f, argv, res["rc"], err)

    check()
    print(f"fuzz: {examples} examples, {count[0]} model directories, exit codes {dict(sorted(codes.items()))}")
    return 0


def fuzz_dir(d: str, fields: dict) -> str:
    """A model directory: a tiny model's config.json updated by `fields`; model.safetensors matches the config
    when it is valid and small (so the command runs), else it holds the tiny model's tensors."""
    import os

    import torch

    import bdh_gpu
    from bdh_gpu.budget import n_params
    from bdh_gpu.io import _expected_shapes, write_model_dir

    torch.manual_seed(0)
    tiny = bdh_gpu.BDHConfig(n_head=2, d=8, N=16, n_layer=2, dropout=0.0)
    cfg_dict = {**tiny.to_dict(), **fields}
    tensors = bdh_gpu.BDH(tiny).state_dict()
    try:
        cfg = bdh_gpu.BDHConfig.from_dict(dict(cfg_dict))
        if n_params(cfg) < 200_000:
            tensors = {k: torch.randn(s) * 0.1 for k, s in _expected_shapes(cfg).items()}
    except (bdh_gpu.InputError, TypeError):
        pass
    os.makedirs(d, exist_ok=True)
    write_model_dir(cfg_dict, {k: v.contiguous() for k, v in tensors.items()}, d)
    return d


if __name__ == "__main__":
    sys.exit(main())
