"""One prepared GPU run (issue 20): the GPU tests, the tensor model against the device's read bandwidth, and the
PyG graph on CUDA against the numba graph on the CPU, in one command under a time budget.

    pip install --no-deps --no-build-isolation -e . && python -m benchmarks.gpu_check --out $OUT
    python -m benchmarks.gpu_check [--quick] [--out DIR] [--budget-s 420] [--device cuda|cpu] [--dtype float64]
                                   [--no-write]

Installs nothing and reads nothing from the network. The parts, in order of priority; each checks the time left
before it starts, and a part or size that does not fit is skipped and named in the section:
1. tests: `pytest -x` over GPU_TESTS selected by GPU_K (the PyG backend's tests, which run on CUDA whenever a
   device is present, tests/test_cuda_paths.py, the GPU benchmark's paths), capped in time: counts.
2. tensor: the device's read bandwidth (torch sum over 2 GiB of float32, best of 3) and float32 matmul FLOP/s;
   paper-25m training step (32 x 512 tokens, chunked attention, bf16 autocast, fused AdamW, eager) tokens/s and
   MFU (benchmarks.gpu_throughput); recurrent decode (Eq. 8, `step(sparse=False, inplace=True)`, B = 1) in
   float32 and bfloat16, tokens/s x bytes_per_token (benchmarks.decode) / the bandwidth = fraction_of_bandwidth.
3. graph: the graph_bench network (Eq. 6, L = 2, Gs complete, fan-out 32, u = 0.99) at n = 4096, then 8192 and
   16384 while they fit (the next size's estimate: (n'/n)^2 x the last size's time x 1.5), activity 5% and 100%,
   8 tokens (the first untimed): tokens/s of numba (CPU, all cores) and pyg (the device); the last token's x, y
   of pyg compared with numba.
4. official: paper-25m (untrained, seed 0) compiled `official` into its graph; a few bytes on numba and on pyg
   on the device, tokens/s after one untimed byte; logits compared: max |pyg - numba| / max |numba| <= 1e-9
   (float64; 1e-3 if --dtype float32 reaches the simulator).
5. train, compiled: the training step of part 2 under torch.compile, when the time left allows.
A hard stop (SIGALRM) at the budget ends whatever runs then; what was measured is still written.

Estimates on an H100 machine (16 cores), from runs of these functions here (2 cores under load, pyg on the CPU;
`python -m benchmarks.gpu_check --device cpu` for the dry run) scaled by the sizes; nothing has run on a GPU yet:
- tests ~30-60 s (14 s here idle, 60 s under load; on CUDA add its start-up and many tiny kernels), capped at
  150 s or less (the other parts' estimates are reserved first);
- tensor ~30 s: a paper-25m step is ~1.2 GFLOP/token x 16k tokens = 20 TFLOP (< 0.2 s at 30% of the bf16 peak,
  eager, 7 steps), decode moves ~1 GB/token in float32 (< 1 ms/token at ~3 TB/s; 2 x 3 x 68 tokens);
- graph ~15 s at n = 4096 (44 s here, 18 s at 2048: building the network and counting events dominate), ~45 s
  at 8192; 16384 (~3 min) runs only when its estimate fits;
- official ~40 s (65 s here: compile 16 s, pyg set-up 16 s, numba 0.55 tokens/s under load; 4.5 s and 2.7
  tokens/s idle in the equiv_bench section), reserved 90 s;
- compiled training ~2 min (compilation), run only if 150 s are left.
Total <= the budget (420 s by default) by construction; the pip install adds ~20 s.

Without CUDA, `run()` (the `python -m benchmarks` entry) returns one row, "not measured: no CUDA device (no GPU
lent)"; `--device cpu` is the dry run: every part on the CPU at tiny sizes (timings meaningless; it writes no
results file, only --out), for tests/test_perf_gpu_check.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, replace

import numpy as np

NAME = "gpu_check"
TITLE = "GPU check: tests, tensor model vs the device's bandwidth, PyG graph on the device vs numba"
NOT_MEASURED = "not measured: no CUDA device (no GPU lent)"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPU_TESTS = [
    "tests/test_cuda_paths.py",
    "tests/test_perf_gpu_paths.py",
    "tests/test_graph_equivalence.py",
    "tests/test_graph_worked_example.py",
    "tests/test_graph_api.py",
    "tests/test_equiv_api.py",
    "tests/test_equiv_properties.py",
]
GPU_K = "cuda or gpu or pyg or graph_equivalence"
DRY_TESTS = ["tests/test_perf_gpu_paths.py"]  # the dry run: one fast test, to exercise the counting
DRY_K = "flops_and_peak"
TEXT = b"First Citizen: Before we proceed any further, hear me speak."
COLUMNS = ("part", "case", "engine", "value", "unit", "vs", "ratio", "note")


@dataclass
class Plan:
    """The sizes of one run: full or quick on CUDA, tiny on the CPU (the dry run)."""

    tests: list
    tests_k: str
    tests_cap_s: float
    gib: float  # read bandwidth over this many GiB
    matmul: int
    preset: str  # tensor model and official compile
    T: int
    batch: int
    steps: int
    decode_tokens: int
    ns: tuple
    fracs: tuple = (0.05, 1.0)
    graph_T: int = 8
    official_tokens: int = 5
    compile_train: bool = True
    est: dict | None = None  # seconds each part is expected to need (what is reserved for it)


def make_plan(device: str, quick: bool) -> Plan:
    """The full run on CUDA; quick: one graph size, fewer steps and tokens, no compilation; cpu: the dry run."""
    full = Plan(
        tests=GPU_TESTS, tests_k=GPU_K, tests_cap_s=150, gib=2.0, matmul=8192, preset="paper-25m", T=512, batch=32,
        steps=5, decode_tokens=64, ns=(4096, 8192, 16384), est=dict(tests=20, tensor=30, graph=30, official=90,
        compile=150),
    )  # fmt: skip
    if device == "cpu":
        tiny = dict(tests=DRY_TESTS, tests_k=DRY_K, tests_cap_s=60, gib=1 / 64, matmul=256, preset="tiny", T=32)
        return replace(full, **tiny, batch=2, steps=1, decode_tokens=4, ns=(64, 128), graph_T=3, official_tokens=3,
                       compile_train=False, est=dict(tests=5, tensor=3, graph=5, official=5))  # fmt: skip
    if quick:
        est = dict(tests=20, tensor=30, graph=30, official=90)
        return replace(full, steps=3, decode_tokens=32, ns=(4096,), graph_T=4, official_tokens=3, compile_train=False,
                       est=est)  # fmt: skip
    return full


class Budget:
    """Seconds left of the run's budget."""

    def __init__(self, seconds: float):
        self.seconds, self.t0 = seconds, time.perf_counter()

    def used(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.seconds - self.used()


class OverBudget(Exception):
    """Raised by the hard stop (SIGALRM) when the budget is spent."""


@contextlib.contextmanager
def hard_stop(seconds: float):
    """Raise OverBudget in the main thread after `seconds` (no-op off the main thread)."""

    def fire(signum, frame):
        raise OverBudget(f"stopped by the hard stop at the {seconds:.0f} s budget")

    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def row(part, case, engine="", value="", unit="", vs="", ratio="", note="") -> dict:
    return dict(zip(COLUMNS, (part, case, engine, value, unit, vs, ratio, note)))


def skipped(part: str, what: str, need: float, left: float) -> dict:
    return row(part, what, note=f"skipped: needs ~{need:.0f} s, {max(left, 0):.0f} s left")


def sync(device: str):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def rel_error(a, b) -> float:
    """max |a - b| / max |b| (0 when both are 0)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = float(np.abs(b).max()) if b.size else 0.0
    diff = float(np.abs(a - b).max()) if b.size else 0.0
    return diff / scale if scale > 0 else diff


# ---- 1. tests -------------------------------------------------------------------------------------------------


def pytest_counts(text: str, finished: bool = True) -> dict:
    """passed / failed / skipped / errors of a pytest -q run from its output: the closing summary line, or, for
    a run stopped before it (finished=False), the progress characters printed so far."""
    counts = dict(passed=0, failed=0, skipped=0, errors=0)
    key = {"passed": "passed", "failed": "failed", "skipped": "skipped", "error": "errors", "errors": "errors"}
    if finished:
        summary = [ln for ln in text.splitlines() if re.search(r"\d+ (passed|failed|skipped|errors?)\b", ln)]
        for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)\b", summary[-1] if summary else ""):
            counts[key[word]] += int(n)
        return counts
    for ln in text.splitlines():
        m = re.fullmatch(r"(?:\S+\.py )?([.sFExX]+)(?:\s+\[\s*\d+%\])?", ln.strip())
        if m:
            for ch, k in (".", "passed"), ("F", "failed"), ("s", "skipped"), ("E", "errors"):
                counts[k] += m.group(1).count(ch)
    return counts


def part_tests(plan: Plan, device: str, budget: Budget, report: dict) -> list:
    cap = min(plan.tests_cap_s, budget.left() - sum(v for k, v in plan.est.items() if k != "tests"))
    if cap < plan.est["tests"]:
        return [skipped("tests", "pytest -x on the GPU tests", plan.est["tests"], cap)]  # cap: what the rest leaves
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-x",
        "-p",
        "no:cacheprovider",
        "--hypothesis-profile=ci",
        *plan.tests,
        "-k",
        plan.tests_k,
    ]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=cap)
        out, rc, finished = p.stdout + p.stderr, p.returncode, True
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        rc, finished = None, False
    dt = time.perf_counter() - t0
    c = pytest_counts(out, finished)
    report["tests"] = dict(
        cmd=" ".join(cmd[1:]),
        rc=rc,
        finished=finished,
        seconds=round(dt, 1),
        **c,
        skip_reasons=[ln for ln in out.splitlines() if ln.startswith("SKIPPED")][:20],
        failures=[ln for ln in out.splitlines() if ln.startswith(("FAILED", "ERROR"))][:20],
        log=out[-20000:],
    )
    state = "finished" if finished else f"stopped at the {cap:.0f} s cap"
    what = f"pytest -x {len(plan.tests)} files -k '{plan.tests_k}'"
    note = f"{c['passed']} passed, {c['failed']} failed, {c['errors']} errors, {c['skipped']} skipped"
    return [row("tests", what, device, round(dt, 1), "s", note=f"{note} ({state}, exit {rc})")]


# ---- 2. tensor model ----------------------------------------------------------------------------------------


def part_tensor(plan: Plan, device: str, budget: Budget, report: dict) -> list:
    from benchmarks.common import matmul_flops, read_bandwidth

    bw = read_bandwidth(plan.gib, repeats=3, device=device)
    fl = matmul_flops(plan.matmul, repeats=3, device=device)
    report["bandwidth_B_s"], report["matmul_flop_s"] = bw, fl
    rows = [
        row("tensor", f"read bandwidth: torch sum over {plan.gib:g} GiB float32, best of 3", device, bw / 1e9, "GB/s"),
        row("tensor", f"float32 matmul {plan.matmul}^2, best of 3", device, fl / 1e12, "TFLOP/s"),
    ]
    rows.append(train_row(plan, device, report, compile_=False))
    rows += decode_rows(plan, device, bw, report)
    return rows


def train_row(plan: Plan, device: str, report: dict, compile_: bool) -> dict:
    """One training step measured as benchmarks.gpu_throughput measures it: bf16 autocast, fused AdamW."""
    import torch

    from bdh_gpu import BDH, Attention, get_preset
    from benchmarks import gpu_throughput as gt

    cfg = get_preset(plan.preset)
    torch.manual_seed(0)
    model = BDH(cfg, attention=Attention("chunked", min(512, plan.T))).to(device).train()
    r = gt.measure(model, list(model.parameters()), plan.T, plan.batch, plan.steps, 2, device, True, compile_)
    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else ""
    peak = gt.peak_flops(name) if name else None
    r["mfu"] = gt.flops_per_token(cfg, plan.T) * r["tokens_per_s"] / peak if peak else None
    report["train_compiled" if compile_ else "train_eager"] = r
    del model
    how = "torch.compile" if compile_ else "eager"
    case = f"{plan.preset} train step, {plan.batch} x {plan.T} tokens, chunked, bf16 autocast, {how}"
    mfu = f"MFU {r['mfu']:.1%} of {peak / 1e12:.0f} TFLOP/s bf16; " if peak else ""
    note = f"{mfu}{r['step_s'] * 1e3:.0f} ms/step, peak {r['peak_mem_gib']:.1f} GiB, loss {r['loss']:.2f}"
    return row("tensor", case, device, r["tokens_per_s"], "tokens/s", note=note)


def decode_tps(model, tokens: int, device: str, warm: int = 4) -> float:
    """Recurrent decode (Eq. 8), B = 1, teacher-forced random bytes: tokens/s over `tokens` steps after `warm`."""
    import torch

    ids = torch.randint(0, 256, (1, warm + tokens), generator=torch.Generator().manual_seed(3)).to(device)
    state = model.init_state(1)
    with torch.no_grad():
        for t in range(warm):
            _, state = model.step(ids[:, t], state, sparse=False, inplace=True)
        sync(device)
        t0 = time.perf_counter()
        for t in range(warm, warm + tokens):
            _, state = model.step(ids[:, t], state, sparse=False, inplace=True)
        sync(device)
    return tokens / (time.perf_counter() - t0)


def decode_rows(plan: Plan, device: str, bw: float, report: dict) -> list:
    """float32 and bfloat16 decode of the preset, best of 3 rounds, against the read bandwidth."""
    import torch

    from bdh_gpu import BDH, get_preset
    from bdh_gpu.model import decoder_in
    from benchmarks.decode import bytes_per_token

    cfg = get_preset(plan.preset)
    cfg.dropout = 0.0
    torch.manual_seed(0)
    m32 = BDH(cfg).to(device).eval()
    rows = []
    for label, m, item in (("float32", m32, 4), ("bfloat16", decoder_in(m32, torch.bfloat16), 2)):
        tps = max(decode_tps(m, plan.decode_tokens, device) for _ in range(3))
        bpt = bytes_per_token(cfg, item, 1)
        frac = tps * bpt / bw
        report[f"decode_{label}"] = dict(tokens_per_s=tps, bytes_per_token=bpt, fraction_of_bandwidth=frac)
        case = f"{plan.preset} recurrent decode {label}, B = 1, {plan.decode_tokens} tokens, best of 3"
        limit = f"limit {bw / bpt:,.0f} tokens/s at {bpt / 1e6:.0f} MB/token"
        rows.append(row("tensor", case, device, tps, "tokens/s", "read bandwidth", frac, limit))
    return rows


# ---- 3. graph: pyg on the device vs numba on the CPU ---------------------------------------------------------


def simulator_kwargs(backend: str, device: str, dtype: str) -> dict:
    """The Simulator's options for a backend: the device for pyg, the graph's dtype (float64 or float32) for both."""
    return {"device": device, "dtype": dtype} if backend == "pyg" else {"dtype": dtype}


def time_graph(net, backend: str, x0, y0, device: str, dtype: str):
    """tokens/s over tokens 1..T-1 (token 0: warm-up, numba compiles there) and the last token's (x, y)."""
    sim = net.simulator(backend=backend, **simulator_kwargs(backend, device, dtype))
    sim.feed(x0[0], y0[0])
    t0 = time.perf_counter()
    for t in range(1, len(x0)):
        x, y = sim.feed(x0[t], y0[t])  # returns host copies: the device is synchronised every token
    return (len(x0) - 1) / (time.perf_counter() - t0), (x, y)


def graph_size(plan: Plan, n: int, device: str, dtype: str, report: dict) -> list:
    import numba

    from benchmarks import graph_bench as gb

    _, _, net = gb.build(n, 2)
    rows = []
    for f in plan.fracs:
        x0, y0 = gb.inputs(n, plan.graph_T, f)
        ev, (ax, ay) = gb.count_events(net, x0, y0)
        tn, (xn, yn) = time_graph(net, "numba", x0, y0, device, dtype)
        tp, (xp, yp) = time_graph(net, "pyg", x0, y0, device, dtype)
        err = max(rel_error(xp, xn), rel_error(yp, yn))
        report.setdefault("graph", []).append(
            dict(
                n=n,
                f=f,
                events_per_token=ev,
                active_x=ax,
                active_y=ay,
                numba_tokens_per_s=tn,
                pyg_tokens_per_s=tp,
                xy_rel_error=err,
            )
        )
        case = f"Eq. 6 graph n = {n}, f = {f:g} (active x {ax:.2f}, y {ay:.2f}), {ev:,.0f} events/token"
        rows.append(
            row(
                "graph",
                case,
                f"numba cpu, {numba.get_num_threads()} threads",
                tn,
                "tokens/s",
                note=f"{tn * ev / 1e6:,.0f} M events/s",
            )
        )
        note = f"{tp * ev / 1e6:,.0f} M events/s; x, y vs numba {err:.1e}"
        rows.append(row("graph", case, f"pyg {device}", tp, "tokens/s", "numba", tp / tn, note))
    return rows


def part_graph(plan: Plan, device: str, budget: Budget, report: dict, dtype: str) -> list:
    """The sizes of plan.ns while they fit, leaving the official part its reserve."""
    rows, last = [], None
    reserve = plan.est["official"]
    for n in plan.ns:
        need = plan.est["graph"] if last is None else last[1] * (n / last[0]) ** 2 * 1.5
        if budget.left() - reserve < need:
            rows.append(skipped("graph", f"Eq. 6 graph n = {n}", need, budget.left() - reserve))
            break
        t0 = time.perf_counter()
        rows += graph_size(plan, n, device, dtype, report)
        last = (n, time.perf_counter() - t0)
    return rows


# ---- 4. the paper-25m official graph ---------------------------------------------------------------------------


def graph_run(compiled, backend: str, device: str, ids, dtype: str) -> dict:
    """One GraphRunner over ids: set-up seconds, tokens/s after the first (untimed) token, the logits (T, V)."""
    import equivalence

    kw = simulator_kwargs(backend, device, dtype)
    t0 = time.perf_counter()
    runner = equivalence.GraphRunner(compiled, backend, **kw)
    setup = time.perf_counter() - t0
    gen = runner.feed(ids)
    logits = [next(gen)["logits"]]
    t0 = time.perf_counter()
    logits += [o["logits"] for o in gen]
    tps = (len(ids) - 1) / (time.perf_counter() - t0)
    return dict(setup_s=setup, tokens_per_s=tps, logits=np.stack(logits), dtype=dtype)


def part_official(plan: Plan, device: str, budget: Budget, report: dict, dtype: str) -> list:
    import torch

    import equivalence
    from bdh_gpu import BDH, get_preset

    cfg = get_preset(plan.preset)
    cfg.dropout = 0.0
    torch.manual_seed(0)
    model = BDH(cfg).eval()
    t0 = time.perf_counter()
    compiled = equivalence.compile_model(equivalence.TensorRunner(model).model, "official")
    compile_s = time.perf_counter() - t0
    ids = np.frombuffer(TEXT[: plan.official_tokens], dtype=np.uint8).astype(np.int64)
    runs = {b: graph_run(compiled, b, device, ids, dtype) for b in ("numba", "pyg")}
    err = rel_error(runs["pyg"]["logits"], runs["numba"]["logits"])
    tol = 1e-9 if runs["pyg"]["dtype"] == "float64" else 1e-3
    report["official"] = dict(
        compile_s=compile_s,
        logit_rel_error=err,
        tolerance=tol,
        tokens=len(ids),
        **{f"{b}_{k}": v for b, r in runs.items() for k, v in r.items() if k != "logits"},
    )
    case = f"{plan.preset} official graph, {len(ids) - 1} bytes after 1 untimed ({compile_s:.0f} s compile)"
    ok = "ok" if err <= tol else "NOT EQUAL"
    return [
        row(
            "official",
            case,
            "numba cpu",
            runs["numba"]["tokens_per_s"],
            "tokens/s",
            note=f"set-up {runs['numba']['setup_s']:.0f} s",
        ),
        row(
            "official",
            case,
            f"pyg {device}",
            runs["pyg"]["tokens_per_s"],
            "tokens/s",
            "numba",
            runs["pyg"]["tokens_per_s"] / runs["numba"]["tokens_per_s"],
            f"logits vs numba {err:.1e} (<= {tol:g}: {ok}); set-up {runs['pyg']['setup_s']:.0f} s",
        ),
    ]


# ---- the run -----------------------------------------------------------------------------------------------------


def run_parts(plan: Plan, device: str, budget: Budget, dtype: str, report: dict) -> list:
    """Every part in order; a failing part is one row (its traceback printed), the others still run."""
    parts = [
        ("tests", lambda: part_tests(plan, device, budget, report)),
        ("tensor", lambda: part_tensor(plan, device, budget, report)),
        ("graph", lambda: part_graph(plan, device, budget, report, dtype)),
        ("official", lambda: part_official(plan, device, budget, report, dtype)),
        ("compile", lambda: [train_row(plan, device, report, compile_=True)]),
    ]
    rows = []
    for name, fn in parts:
        need = plan.est.get(name)
        if name == "compile" and not plan.compile_train:
            rows.append(row("tensor", "train step under torch.compile", note="skipped: not in this plan (quick/dry)"))
            continue
        if name not in ("tests", "graph") and budget.left() < need:
            rows.append(skipped(name, f"part {name}", need, budget.left()))
            continue
        print(f"gpu_check: {name} ({budget.left():.0f} s left)", flush=True)
        t0 = time.perf_counter()
        try:
            rows += fn()
        except Exception as e:  # OverBudget included: one failure must not lose the other parts
            traceback.print_exc()
            report.setdefault("failures", []).append(f"{name}: {type(e).__name__}: {e}"[:300])
            rows.append(row(name, f"part {name}", device, note=f"failed: {type(e).__name__}: {e}"[:300]))
        report.setdefault("part_s", {})[name] = round(time.perf_counter() - t0, 1)
    return rows


def goals(report: dict) -> list:
    """Goals computed from what was measured (a goal whose numbers were not measured is left out)."""
    from benchmarks.common import goal

    out = []
    if "tests" in report:
        t = report["tests"]
        out.append(goal("GPU tests: failed + errors", t["failed"] + t["errors"], 0, unit="", higher=False))
    if "decode_float32" in report:
        d = report["decode_float32"]
        out.append(goal("float32 decode / read bandwidth (B = 1)", d["fraction_of_bandwidth"], 0.9, unit=""))
    if report.get("graph"):
        big = max(g["n"] for g in report["graph"])
        g = max((g for g in report["graph"] if g["n"] == big), key=lambda g: g["f"])
        text = f"pyg on the device within 3x of numba at n = {big}, f = {g['f']:g} (pyg / numba tokens/s)"
        out.append(goal(text, g["pyg_tokens_per_s"] / g["numba_tokens_per_s"], 1 / 3, unit=""))
    if "official" in report:
        o = report["official"]
        out.append(
            goal(
                "official graph: pyg logits vs numba (max relative error)",
                o["logit_rel_error"],
                o["tolerance"],
                unit="",
                higher=False,
            )
        )
    return out


def notes(plan: Plan, device: str, budget: Budget, dtype: str, report: dict, argv: list) -> list:
    skipped_parts = [r for r in report["rows"] if str(r["note"]).startswith("skipped")]
    lines = [
        f"Command: `python -m benchmarks.gpu_check {' '.join(argv)}`; budget {budget.seconds:.0f} s, used "
        f"{budget.used():.0f} s (per part: {report.get('part_s', {})}); device {report['device']}.",
        f"Graph dtype: {dtype} (weights and sigma; node sums in float64).",
        "Skipped for time or by the plan: " + ("; ".join(r["case"] for r in skipped_parts) or "nothing") + ".",
        "tensor: fraction_of_bandwidth = tokens/s x bytes per token (per layer the three n x d matrices once and "
        "the n x d state read and written, plus one embedding row and lm_head; benchmarks.decode) / the read "
        "bandwidth measured first in this run. graph: the graph_bench network (L = 2, Gs complete, fan-out 32, "
        "u = 0.99), numba on all CPU cores, pyg on the device, the first token untimed; the pyg x, y of the last "
        "token against numba's (max relative). official: logits of every byte, max |pyg - numba| / max |numba|.",
    ]
    if device == "cpu":
        lines.insert(0, "**CPU dry run** (tiny sizes, pyg on the CPU): checks the code paths; timings meaningless.")
    return lines


def measure(plan: Plan, device: str, budget_s: float, dtype: str, argv: list) -> tuple[dict, dict]:
    """-> (the section's result dict, the full report)."""
    import torch

    if device.startswith("cuda:"):
        torch.cuda.set_device(torch.device(device))  # what gpu_throughput synchronises and measures
    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "CPU (dry run)"
    report = {"device": name, "plan": asdict(plan), "dtype": dtype}
    budget = Budget(budget_s)
    with hard_stop(budget_s):
        report["rows"] = run_parts(plan, device, budget, dtype, report)
    report["seconds"] = round(budget.used(), 1)
    r = dict(name=NAME, title=TITLE, rows=report["rows"], goals=goals(report))
    r["notes"] = notes(plan, device, budget, dtype, report, argv)
    return r, report


def run(quick: bool = False) -> dict:
    """Entry of `python -m benchmarks`: the whole check on CUDA (quick: one graph size, no compile); without
    CUDA one row saying it was not measured."""
    import torch

    if not torch.cuda.is_available():
        return dict(name=NAME, title=TITLE, rows=[{"status": NOT_MEASURED}])
    return measure(make_plan("cuda", quick), "cuda", 420, "float64", ["--quick"] if quick else [])[0]


def save(out: str, r: dict, report: dict, quick: bool, results: str | None) -> list:
    """--out: the report (JSON), the section (Markdown), the pytest log, and RESULTS.md when it was written."""
    from benchmarks.__main__ import section
    from benchmarks.common import machine

    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(out, f) for f in ("gpu_check.json", "gpu_check_section.md")]
    with open(paths[0], "w") as f:
        json.dump({"machine": machine(), "result": r, "report": report}, f, indent=1, default=str)
    with open(paths[1], "w") as f:
        f.write(section(r, machine(), quick) + "\n")
    if report.get("tests", {}).get("log"):
        paths.append(os.path.join(out, "gpu_check_tests.log"))
        with open(paths[-1], "w") as f:
            f.write(report["tests"]["log"])
    if results:
        paths.append(os.path.join(out, os.path.basename(results)))
        shutil.copyfile(results, paths[-1])
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=TITLE)
    ap.add_argument("--quick", action="store_true", help="one graph size, fewer steps, no torch.compile")
    ap.add_argument("--out", metavar="DIR", help="also write the report, the section and the test log here")
    ap.add_argument("--budget-s", type=float, default=420.0, help="seconds for the whole run (default 420)")
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (the dry run: tiny sizes)")
    ap.add_argument("--dtype", default="float64", choices=("float64", "float32"), help="of the graphs")
    ap.add_argument("--no-write", action="store_true", help="write no results file (only --out)")
    argv = sys.argv[1:] if argv is None else list(argv)
    a = ap.parse_args(argv)
    if not (a.device == "cpu" or re.fullmatch(r"cuda(:\d+)?", a.device)):
        ap.error(f"--device: expected cuda, cuda:N or cpu, got {a.device!r}")
    if a.budget_s <= 0:
        ap.error(f"--budget-s: expected a positive number of seconds, got {a.budget_s:g}")
    import torch

    if a.device != "cpu" and not torch.cuda.is_available():
        print(f"gpu_check: {NOT_MEASURED}. Run it on a GPU machine, or pass --device cpu for the dry run.")
        r, report = dict(name=NAME, title=TITLE, rows=[{"status": NOT_MEASURED}]), {"device": None}
    else:
        r, report = measure(make_plan(a.device, a.quick), a.device, a.budget_s, a.dtype, argv)
    results = None
    if a.device != "cpu" and report["device"] and not a.no_write:
        from benchmarks.__main__ import write_section

        results = write_section(r, a.quick)
        print("wrote", results)
    if a.out:
        print("wrote", ", ".join(save(a.out, r, report, a.quick, results)))
    from benchmarks.__main__ import section
    from benchmarks.common import machine

    print(section(r, machine(), a.quick))
    return 1 if report.get("failures") else 0


if __name__ == "__main__":
    sys.exit(main())
