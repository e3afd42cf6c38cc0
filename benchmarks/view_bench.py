"""`bdh view` at paper-25m size (n = 32768, d = 256, h = 4, L = 6; untrained weights, seed 0): compile, the two
passes of the ViewSession, the page's size, and how the page behaves in headless chromium (the first render, a
sub-round step, a token step, a neuron click, as seen through Selenium, so including its round trips).

    python -m benchmarks.view_bench                  # official compile, the first 64 bytes of TEXT
    python -m benchmarks.view_bench --tokens 4 --out /tmp/v25.html
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time

TEXT = b"The Dragon Hatchling hatches: it learns at its synapses while it reads, one token at a time."
PAGE_GOAL_MB = 20  # the static page for 64 tokens at paper-25m (issue 18)


def browser_times(path: str) -> dict:
    """Seconds for the page's first render, 20 sub-round steps, a token step and a neuron click (chromium)."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (os.path.exists(chromium) and os.path.exists(driver)):
        return {"browser": "chromium or chromedriver not found"}
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000", "--disable-dev-shm-usage"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    try:
        out = {}
        t = time.perf_counter()
        d.get("file://" + os.path.abspath(path))
        out["first_render_s"] = round(time.perf_counter() - t, 2)
        out["cells"] = len(d.find_elements(By.CSS_SELECTOR, ".cell"))
        out["svg_nodes"] = len(d.find_elements(By.CSS_SELECTOR, "#node-layer circle"))
        out["svg_sigma_edges"] = len(d.find_elements(By.CSS_SELECTOR, "#sigma-layer line"))
        t = time.perf_counter()
        for _ in range(20):
            d.find_element(By.ID, "next-sub").click()
        out["sub_round_step_s"] = round((time.perf_counter() - t) / 20, 3)
        t = time.perf_counter()
        d.find_element(By.ID, "next-token").click()
        out["token_step_s"] = round(time.perf_counter() - t, 3)
        out["svg_edges_max"] = max(
            d.execute_script(
                "const D = window.bdhView.data(); return Math.max(...D.frames.map((f) => (f.ed || []).length));"
            ),
            0,
        )
        cell = d.find_elements(By.CSS_SELECTOR, "#grid-cell-neurons .cell")[5]
        t = time.perf_counter()
        cell.click()
        out["neuron_click_s"] = round(time.perf_counter() - t, 3)
        out["synapses_listed"] = len(d.find_elements(By.CSS_SELECTOR, "li.syn"))
        return out
    finally:
        d.quit()


def measure(tokens: int = 64, how: str = "official", out: str | None = None, preset: str = "paper-25m") -> dict:
    """Compile `preset` (untrained, seed 0), run the two ViewSession passes over `tokens` bytes of TEXT, write
    the page, time it in chromium. -> one flat row."""
    import torch

    import equivalence
    from bdh.teach.view import ViewSession, write_page
    from bdh_gpu import BDH, get_preset

    cfg = get_preset(preset)
    cfg.dropout = 0.0
    if how == "circuit":
        cfg.variant = "normfree"
    torch.manual_seed(0)
    model = BDH(cfg).eval()
    r = dict(preset=preset, compile=how, n=cfg.n, tokens=tokens, load_avg_start=round(os.getloadavg()[0], 1))
    t = time.perf_counter()
    c = equivalence.compile_model(equivalence.TensorRunner(model).model, how)
    r["compile_s"] = round(time.perf_counter() - t, 1)
    s = ViewSession(c, model=model)
    t = time.perf_counter()
    s.load(list(TEXT[:tokens]))
    r["pass_a_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    r["frames"] = len(s.step("all"))
    r["pass_b_s"] = round(time.perf_counter() - t, 1)
    path = out or os.path.join(tempfile.mkdtemp(), "view.html")
    write_page(path, s.data())
    r["page_mb"] = round(os.path.getsize(path) / 1e6, 1)
    r["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 1)
    r.update(browser_times(path))
    r["load_avg_end"] = round(os.getloadavg()[0], 1)
    return r


def run(quick: bool = False) -> dict:
    """Entry of `python -m benchmarks`: paper-25m, official, 10 bytes (quick: `small`, 4 bytes)."""
    from bdh.teach import view
    from benchmarks.common import goal

    preset, tokens = ("small", 4) if quick else ("paper-25m", 64)
    r = measure(tokens, "official", None, preset)
    notes = [
        f"{preset} shapes, untrained weights (seed 0), the official compile, the first {tokens} bytes of "
        f"{TEXT!r}, numba backend, default caps ({view.NEURONS} most active neurons, {view.HUB_CAP} nodes of every "
        f"hub population, all output nodes, {view.SYNAPSES} synapses per group, {view.SIGMA_SYNAPSES} sigma "
        f"synapses per neuron and layer, {view.EDGES} drawn edges per rule and sub-round), the tensor model's x, y "
        "and logits embedded. pass A = the run that picks what the page shows, pass B = the frames. Browser: Debian "
        "chromium headless through Selenium, so the times include the WebDriver round trip; sub_round_step_s is "
        "the mean of 20 clicks (each redraws the SVG graph and the grids)."
    ]
    out = {
        "name": "view_bench",
        "title": f"`bdh view` at {preset}: page size and responsiveness",
        "notes": notes,
        "rows": [r],
    }
    if not quick:
        out["goals"] = [
            goal(f"static page for {tokens} tokens at {preset}", r["page_mb"], PAGE_GOAL_MB, unit=" MB", higher=False)
        ]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--compile", default="official", choices=("official", "circuit"))
    ap.add_argument("--out", help="keep the page here (default: a temporary file)")
    a = ap.parse_args()
    print(json.dumps(measure(a.tokens, a.compile, a.out)))


if __name__ == "__main__":
    main()
