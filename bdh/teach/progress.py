"""Progress bars of the teaching layer: tqdm on stderr (stdout keeps the results), or nothing."""

from __future__ import annotations

import sys


class _Off:
    def update(self, n=1):
        pass

    def set_postfix_str(self, s):
        pass

    def close(self):
        pass


def bar(total: int, desc: str, enabled: bool = True, unit: str = "step"):
    """A tqdm bar on stderr (cleared when done), or a silent stand-in when not enabled."""
    if not enabled:
        return _Off()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)
