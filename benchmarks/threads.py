"""Thread policies of the tensor model on the CPU, idle and under a bounded synthetic background load.

Two workloads, each timed in a fresh child process per policy (the thread count and OMP_WAIT_POLICY are read
when torch starts): `recall` = 30 training steps of the `tiny` preset on the recall task (batch 32, block 64,
AdamW), and `chunked` = one train step (forward + backward) of the `small` shapes at T = 1024 in chunks of 128
(batch 1, the best of 2 after a warm-up). Policies: torch's default intra-op threads, the CPUs this process may
run on (`os.sched_getaffinity`), the same with OMP_WAIT_POLICY=PASSIVE, and one thread. `loaded`: BUSY python
processes spin for the whole measurement (started before, killed after). The machine is shared, so "idle" is
not idle: every row carries the load average when its child started.

    python -m benchmarks.threads [--quick] [--busy 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks.common import goal

POLICIES = ("default", "affinity", "affinity+passive", "one")
BDH_DEFAULT = "affinity+passive"  # what bdh/options.py set_threads does
WORKLOADS = ("recall", "chunked")


def threads_of(policy: str) -> int | None:
    """The intra-op thread count a policy sets (None: torch's default)."""
    if policy == "default":
        return None
    return 1 if policy == "one" else len(os.sched_getaffinity(0))


def _recall(steps: int) -> float:
    import torch

    from bdh_gpu import BDH, get_preset
    from bdh_gpu.data import RecallData
    from bdh_gpu.train import loss_fn

    torch.manual_seed(0)
    model = BDH(get_preset("tiny")).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    data, gen = RecallData(64), torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        x, y = data.get_batch("train", 32, gen)
        loss_fn(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def _chunked(T: int) -> float:
    import torch
    import torch.nn.functional as F

    from bdh_gpu import BDH, Attention, get_preset

    torch.manual_seed(0)
    cfg = get_preset("small")
    cfg.dropout = 0.0
    model = BDH(cfg, attention=Attention("chunked", 128)).train()
    x = torch.randint(0, 256, (1, T), generator=torch.Generator().manual_seed(1))

    def step():
        t0 = time.perf_counter()
        F.cross_entropy(model(x).view(-1, 256), x.view(-1)).backward()
        for p in model.parameters():
            p.grad = None
        return time.perf_counter() - t0

    step()
    return min(step(), step())


def child(policy: str, workload: str, quick: bool) -> dict:
    import torch

    k = threads_of(policy)
    if k is not None:
        torch.set_num_threads(k)
    load = os.getloadavg()[0]
    secs = _recall(10 if quick else 30) if workload == "recall" else _chunked(256 if quick else 1024)
    return {"threads": torch.get_num_threads(), "seconds": secs, "load_avg_at_start": round(load, 2)}


def measure(policy: str, workload: str, quick: bool) -> dict:
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    env["OMP_WAIT_POLICY"] = "PASSIVE" if policy.endswith("passive") else env.get("OMP_WAIT_POLICY", "")
    if not env["OMP_WAIT_POLICY"]:
        del env["OMP_WAIT_POLICY"]
    args = [sys.executable, "-m", "benchmarks.threads", "--child", policy, workload] + (["--quick"] if quick else [])
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=1200)
    if r.returncode != 0:
        raise RuntimeError(f"threads child {policy} {workload}: {r.stderr.strip().splitlines()[-1:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def spinners(n: int, seconds: float) -> list:
    """n python processes spinning on one core each for at most `seconds` (a bound if we die before killing)."""
    code = f"import time\nt = time.time() + {seconds}\nwhile time.time() < t: pass\n"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]


def conditions(quick: bool, busy: int, log=print) -> list:
    rows = []
    for condition in ("idle", "loaded"):
        procs = spinners(busy, 1800) if condition == "loaded" else []
        try:
            time.sleep(2 if procs else 0)
            for workload in WORKLOADS:
                for policy in POLICIES:
                    r = measure(policy, workload, quick)
                    rows.append({"condition": condition, "workload": workload, "policy": policy, **r})
                    log(json.dumps(rows[-1]))
        finally:
            for p in procs:
                p.kill()
                p.wait()
    return rows


def run(quick: bool = False, busy: int = 2) -> dict:
    rows = conditions(quick, busy)
    by = {(r["condition"], r["workload"], r["policy"]): r["seconds"] for r in rows}
    for r in rows:
        r["vs_best_here"] = min(by[(r["condition"], r["workload"], p)] for p in POLICIES) / r["seconds"]
    notes = [
        f"Workloads: recall = {10 if quick else 30} training steps of `tiny` (batch 32, block 64); chunked = one "
        f"train step of `small` at T = {256 if quick else 1024}, C = 128 (best of 2). Loaded: {busy} python "
        f"processes spinning through the whole condition, on {len(os.sched_getaffinity(0))} usable CPUs.",
        "vs_best_here = the fastest policy's time in the same condition and workload / this policy's time.",
        "The default of `bdh` (`--threads`, bdh/options.py): " + default_note(),
    ]
    goals = [
        goal(
            f"bdh's default (affinity+passive) within 1.5x of the best policy: {c}, {w}",
            min(by[(c, w, p)] for p in POLICIES) / by[(c, w, BDH_DEFAULT)],
            1 / 1.5,
            note=f"torch's default: {min(by[(c, w, p)] for p in POLICIES) / by[(c, w, 'default')]:.2f}x the best",
        )
        for c in ("idle", "loaded")
        for w in WORKLOADS
    ]
    return {
        "name": "threads",
        "title": "Thread policies, idle and under background load",
        "rows": rows,
        "notes": notes,
        "goals": goals,
    }


def default_note() -> str:
    from bdh.options import THREADS_POLICY

    return THREADS_POLICY


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--busy", type=int, default=2)
    p.add_argument("--child", nargs=2, metavar=("POLICY", "WORKLOAD"))
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(*a.child, a.quick)))
        return 0
    print(json.dumps(run(a.quick, a.busy), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
