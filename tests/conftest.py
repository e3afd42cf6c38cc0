"""Hypothesis profiles: `ci` (bounded, used by `make test`) and `long` (`make test-long`).

No deadline anywhere: the first call of a numba kernel compiles it.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    print_blob=True,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=300,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=10, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "tinyshakespeare.txt")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spinning on a busy 2-core machine (restored after).

    Use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_terminal_summary(terminalreporter):
    """The share of live draws of the equivalence property tests (equivalence.strategies.live), and the largest
    error the float32 graph's property tests saw (equivalence.strategies.WORST)."""
    from equivalence.strategies import DRAWS, WORST

    for name, rel in sorted(WORST.items()):
        terminalreporter.write_line(f"largest relative error, {name}: {rel:.2e}")
    names = sorted({name for name, _ in DRAWS})
    if not names:
        return
    terminalreporter.write_line("equivalence property tests, live draws (logits not ~0, activations bounded):")
    for name in names:
        drawn, ok = DRAWS[(name, "drawn")], DRAWS[(name, "live")]
        terminalreporter.write_line(f"  {name:<28} {ok:>4} of {drawn:>4} live ({100 * ok / max(drawn, 1):.0f}%)")
