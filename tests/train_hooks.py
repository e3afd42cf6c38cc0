"""`bdh` with test hooks: stop a real `bdh train` run at a known point (the library reads no test switches).

    python tests/train_hooks.py [--pause STEP:SECONDS] [--fail RANK:STEP:raise|kill] [--ckpt-pause STEP:SECONDS] \\
        train --out OUT ...
    python -m torch.distributed.run --nproc-per-node 2 tests/train_hooks.py --fail 1:3:raise train --out OUT ...

The hook options come first; the rest is the `bdh` command line, run by `bdh.cli.main` with the hooks as
`bdh_gpu.train.train` callbacks, so signal handling, exit codes and error lines are the CLI's own.
  --pause STEP:SECONDS       after update STEP, wait SECONDS or until a SIGINT/SIGTERM arrives
                             (rank 0 prints "bdh-test: paused after step STEP")
  --fail RANK:STEP:HOW       rank RANK, right after update STEP, raises RuntimeError (HOW = raise) or
                             SIGKILLs itself (HOW = kill), printing "bdh-test: rank R fails (HOW) at time T"
  --ckpt-pause STEP:SECONDS  the step-STEP training state stands half-written in its temporary file for
                             SECONDS (a kill -9 then lands mid-write), then the write completes
"""

import os
import signal
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAIL_MESSAGE = "injected failure (tests/train_hooks.py --fail) after step {step}"


class Pause:
    def __init__(self, spec: str):
        step, _, sec = spec.partition(":")
        self.step, self.seconds = int(step), float(sec or 30)

    def on_step_end(self, step, rank, stop):
        if step != self.step:
            return
        if rank == 0:
            print(f"bdh-test: paused after step {step}", file=sys.stderr, flush=True)
        until = time.monotonic() + self.seconds
        while not stop.requested and time.monotonic() < until:
            time.sleep(0.02)


class Fail:
    def __init__(self, spec: str):
        rank, step, self.how = spec.split(":")
        self.rank, self.step = int(rank), int(step)

    def on_step_end(self, step, rank, stop):
        if (rank, step) != (self.rank, self.step):
            return
        print(f"bdh-test: rank {rank} fails ({self.how}) at time {time.time():.3f}", file=sys.stderr, flush=True)
        if self.how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(FAIL_MESSAGE.format(step=step))


class CheckpointPause:
    def __init__(self, spec: str):
        step, _, sec = spec.partition(":")
        self.step, self.seconds = int(step), float(sec or 30)

    def on_checkpoint_written(self, tmp, step):
        if step != self.step:
            return
        with open(tmp, "rb") as f:
            payload = f.read()
        with open(tmp, "r+b") as f:
            f.truncate(len(payload) // 2)
        print(f"bdh-test: checkpoint write of step {step} paused half-way ({tmp})", file=sys.stderr, flush=True)
        time.sleep(self.seconds)
        with open(tmp, "wb") as f:
            f.write(payload)


HOOKS = {"--pause": Pause, "--fail": Fail, "--ckpt-pause": CheckpointPause}


def parse(argv: list) -> tuple[list, list]:
    """(callbacks, bdh argv): leading `--hook VALUE` pairs, then the bdh command line."""
    callbacks = []
    while argv and argv[0] in HOOKS:
        callbacks.append(HOOKS[argv[0]](argv[1]))
        argv = argv[2:]
    return callbacks, argv


if __name__ == "__main__":
    sys.path.insert(0, REPO)  # this checkout's bdh, as `python -m bdh` run from the repository root imports
    from bdh.cli import main

    hooks, rest = parse(sys.argv[1:])
    sys.argv[1:] = rest  # main(None): this process is the `bdh` program (its exit on a late signal included)
    sys.exit(main(callbacks=hooks))
