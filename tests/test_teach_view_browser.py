"""`bdh view` in a real browser: Debian's chromium driven by Selenium (chromium-driver), offline.

The tests click and read what the page shows (the step counter, a neuron's synapse list, the predicted bytes)
and check the numbers against the Python side (the graph simulator's state); each saves a screenshot under
artifacts/ (git-ignored; the path is printed). Without chromium, chromedriver or selenium they skip with the
reason, except where BDH_REQUIRE_BROWSER=1 (set by .ci/run), where they fail.
"""

import os
import shutil
import threading

import numpy as np
import pytest
import torch
from small_models import small_model

import bdh_gpu
from bdh.teach.serve import make_server
from bdh.teach.view import ViewSession, write_page
from equivalence import GraphRunner, TensorRunner, compile_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.path.join(ROOT, "artifacts")
CHROMIUM = os.environ.get("BDH_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("BDH_CHROMEDRIVER", shutil.which("chromedriver") or "/usr/bin/chromedriver")


def _missing():
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)):
        if not os.path.exists(path):
            return f"{name} not found at {path} (apt-get install -y chromium chromium-driver)"
    return None


@pytest.fixture(scope="module")
def browser():
    why = _missing()
    if why:
        if os.environ.get("BDH_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests required (BDH_REQUIRE_BROWSER=1) but {why}")
        print(f"\nskipping the browser tests: {why}")
        pytest.skip(why)
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--disable-extensions",
        "--no-first-run",
    ):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


def screenshot(drv, name):
    os.makedirs(ARTIFACTS, exist_ok=True)
    path = os.path.join(ARTIFACTS, name)
    drv.save_screenshot(path)
    print(f"\nscreenshot: {path}")
    return path


model = small_model


def by_id(drv, i):
    from selenium.webdriver.common.by import By

    return drv.find_element(By.ID, i)


def css(drv, sel):
    from selenium.webdriver.common.by import By

    return drv.find_elements(By.CSS_SELECTOR, sel)


def wait(drv, cond, timeout=30):
    """Wait for cond(driver); an element re-rendered meanwhile (stale) is looked up again on the next poll."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(drv, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: cond(d))


def rows_of(drv, title):
    """{variable: value} of the detail panel once it shows `title` (read again if re-rendered meanwhile)."""

    def read(d):
        if by_id(d, "detail-title").text != title:
            return False
        return {r.get_attribute("data-var"): float(r.get_attribute("data-value")) for r in css(d, "#detail-values tr")}

    return wait(drv, read)


def close(a, b):
    return abs(a - b) <= 2e-6 * max(1.0, abs(b))


def test_static_page_steps_and_shows_synapses(browser, tmp_path):
    """The static page of an official-compile model: the step buttons move the counter one sub-round, one round,
    one token; the predicted bytes and their logits are GraphRunner's; clicking a neuron lists its synapses with
    the network's weights and sigma equal to the simulator's edge state after the token shown."""
    c = compile_model(TensorRunner(model()).model)
    ids = list(b"hello")
    s = ViewSession(c, synapses=4)
    s.load(ids)
    s.step("all")
    path = write_page(str(tmp_path / "view.html"), s.data())
    drv = browser
    drv.get("file://" + path)
    counter = by_id(drv, "counter")
    assert counter.get_attribute("data-frame") == "0" and "token 1/5 'h'" in counter.text
    R = len(c.kernel.rounds)
    by_id(drv, "next-sub").click()
    assert counter.get_attribute("data-frame") == "1" and counter.get_attribute("data-phase") == "communication"
    assert f"round 1/{R}" in counter.text
    # the official compile's graph: every shown node in its band, this sub-round's drawn edges as Python drew them
    assert len(css(drv, "#node-layer circle")) == sum(len(v) for v in s.shown.values())
    for f in (1, 5):  # LayerNorm's mean at the residual hubs; x = (D_x v)^+ from the hubs to the neurons
        drv.execute_script(f"window.bdhView.go({f})")
        rules = c.kernel.rounds[s.frames[f]["k"]].communication
        want = {f"e-{rules[d[0]].group}-{d[1]}" for d in s.frames[f]["ed"]}
        assert want and {e.get_attribute("id") for e in css(drv, "#edge-layer line.msg")} == want
    drv.execute_script("window.bdhView.go(1)")
    by_id(drv, "next-round").click()  # to the end of round 1 (its computation sub-round)
    assert counter.get_attribute("data-frame") == "2" and counter.get_attribute("data-phase") == "computation"
    by_id(drv, "next-token").click()
    by_id(drv, "next-token").click()  # end of token 2
    assert counter.get_attribute("data-frame") == str(2 * (1 + 2 * R) - 1)
    assert f"step {2 * (1 + 2 * R)} of {5 * (1 + 2 * R)}" in counter.text
    runner = GraphRunner(c, "numba")
    outs = []
    for out in runner.feed(ids[:2]):
        outs.append(out)
    edges = runner.sim.state.edges
    top = css(drv, "#pred .top")
    assert len(top) == 5
    for el in top:
        b, logit = int(el.get_attribute("data-byte")), float(el.get_attribute("data-logit"))
        assert close(logit, outs[1]["logits"][b])
    assert int(top[0].get_attribute("data-byte")) == int(np.argmax(outs[1]["logits"]))
    assert by_id(drv, "tokpred-1").text != "·" and by_id(drv, "tokpred-2").text == "·"
    # a neuron's synapses
    i = int(s.shown["neurons"][3])
    by_id(drv, f"cell-neurons-{i}").click()
    assert by_id(drv, "detail-title").text == f"neuron {i}"
    lists = css(drv, "#detail ul.syn-list")
    assert lists
    checked_w = checked_s = 0
    for ul in lists:
        g = c.network.groups[ul.get_attribute("data-group")]
        for li in ul.find_elements("css selector", "li.syn"):
            o, v = int(li.get_attribute("data-other")), float(li.get_attribute("data-value"))
            src, dst = (i, o) if ul.get_attribute("data-dir") == "out" else (o, i)
            e = int(np.flatnonzero((g.source == src) & (g.indices == dst))[0])
            var = ul.get_attribute("data-var")
            if var:
                assert close(v, edges[var][e]), (var, src, dst)
                checked_s += 1
            else:
                assert close(v, g.weight[e]), (g.name, src, dst)
                checked_w += 1
    assert checked_w > 0 and checked_s > 0
    # the rule panel shows the round's rules, the fired ones with their message counts
    by_id(drv, "prev-round").click()
    fired = css(drv, "#rules li.fired")
    assert css(drv, "#round-label") and all(f.get_attribute("data-count") for f in fired)
    # filters: layer and threshold
    from selenium.webdriver.support.ui import Select

    Select(by_id(drv, "layer")).select_by_value("1")
    assert "end of layer 1" in by_id(drv, "above").text
    th = by_id(drv, "threshold")
    th.clear()
    th.send_keys("1e9")
    assert by_id(drv, "above").text.startswith("0 of")
    th.clear()
    th.send_keys("0")
    Select(by_id(drv, "layer")).select_by_value("0")
    by_id(drv, f"cell-neurons-{i}").click()
    screenshot(drv, "view_static.png")


def test_serve_typed_prompt_matches_python(browser):
    """--serve with a dense (Table 1(b)) compile of a normfree model: type a prompt, press Run, step by round and
    by token; the counter, the shown neuron values and the predictions equal a session stepped in Python and
    GraphRunner's logits; a neuron outside the page opens on demand; a too long prompt shows the server's 4xx
    message on the page."""
    c = compile_model(TensorRunner(model("normfree", seed=1)).model, "dense")
    s = ViewSession(c, neurons=16, max_prompt=12)
    srv = make_server(s, "127.0.0.1", 0)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    drv = browser
    try:
        drv.get(f"http://127.0.0.1:{srv.server_address[1]}/")
        prompt = by_id(drv, "prompt")
        prompt.send_keys("x" * 13)
        by_id(drv, "run").click()
        wait(drv, lambda d: "at most 12 bytes" in by_id(d, "error").text)
        prompt.clear()
        prompt.send_keys("abcab")
        by_id(drv, "run").click()
        frame = lambda d: by_id(d, "counter").get_attribute("data-frame")
        wait(drv, lambda d: frame(d) == "0")
        R = len(c.kernel.rounds)
        for k in (2, 4, 6):  # each click: the server steps one round (two sub-rounds)
            by_id(drv, "next-round").click()
            wait(drv, lambda d: frame(d) == str(k))
        counter = by_id(drv, "counter")
        assert counter.get_attribute("data-round") == "2" and f"round 3/{R}" in counter.text
        assert counter.get_attribute("data-phase") == "computation"
        for t in range(1, 5):  # to the end of token 4 (the first three predict little at init)
            by_id(drv, "next-token").click()
            wait(drv, lambda d: frame(d) == str(t * (1 + 2 * R) - 1))
        ref = ViewSession(c, neurons=16)
        ref.load(list(b"abcab"))
        for _ in range(4):
            ref.step("token")
        i = int(ref.shown["neurons"][0])
        by_id(drv, f"cell-neurons-{i}").click()
        rows = rows_of(drv, f"neuron {i}")
        live = ref.sim.state.nodes
        for var in ("X", "Y", "A", "Xe", "Xi", "Ye", "Yi"):
            assert close(rows[var], live[var][i]), var
        runner = GraphRunner(c, "numba")
        logits = runner.logits(list(b"abca"))
        top = css(drv, "#pred .top")
        assert int(top[0].get_attribute("data-byte")) == int(np.argmax(logits[3])) and logits[3].max() > 0
        assert close(float(top[0].get_attribute("data-logit")), logits[3].max())
        hidden = next(k for k in range(c.network.n) if k not in set(ref.shown["neurons"].tolist()))
        find = by_id(drv, "find")
        find.send_keys(str(hidden))
        by_id(drv, "find-go").click()
        rows = rows_of(drv, f"neuron {hidden}")
        assert close(rows["X"], live["X"][hidden])
        by_id(drv, f"cell-neurons-{i}").click()
        screenshot(drv, "view_serve.png")
    finally:
        srv.shutdown()
        srv.server_close()


DEMO = os.path.join(ROOT, "tests", "data", "demo_normfree")


def test_serve_tour_ablates_live(browser):
    """--serve on the committed trained demo model, a typed recall prompt: the tour's recall step has a button
    that zeroes the fact's synapses in the live graph (POST /api/ablate); the page then shows the answer's
    probability and the top 5 before and after, equal to ViewSession.ablate in Python (bdh.teach.memory), and
    marks the zeroed synapses drawn on the graph."""
    c = compile_model(bdh_gpu.load(DEMO).eval())
    srv = make_server(ViewSession(c, task="recall", neurons=16), "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    drv = browser
    try:
        drv.get(f"http://127.0.0.1:{srv.server_address[1]}/")
        by_id(drv, "prompt").send_keys("a=3 b=5 c=1 : b")
        by_id(drv, "run").click()
        wait(drv, lambda d: by_id(d, "counter").get_attribute("data-frame") == "0")
        by_id(drv, "tour-start").click()
        wait(drv, lambda d: by_id(d, "tour").get_attribute("data-step") == "0")  # the server stepped there
        while by_id(drv, "tour").get_attribute("data-key") != "recall":
            step = by_id(drv, "tour").get_attribute("data-step")
            by_id(drv, "tour-next").click()
            wait(drv, lambda d: by_id(d, "tour").get_attribute("data-step") != step)
        by_id(drv, "tour-ablate").click()
        after = wait(drv, lambda d: css(d, "#ablation-after"))[0]
        ref = ViewSession(c, task="recall", neurons=16)
        ref.load(list(b"a=3 b=5 c=1 : b"))
        want = ref.ablate()
        for when in ("before", "after"):
            row = by_id(drv, f"ablation-{when}")
            assert close(float(row.get_attribute("data-p")), want[when]["p"]), when
            tops = row.find_elements("css selector", ".abl-top")
            assert [int(e.get_attribute("data-byte")) for e in tops] == [b for b, _, _ in want[when]["top"]]
            assert all(close(float(e.get_attribute("data-prob")), p) for e, (_, _, p) in zip(tops, want[when]["top"]))
        assert float(after.get_attribute("data-p")) < 0.5 < want["before"]["p"]
        assert "p('5')" in after.text
        zeroed = {x.get_attribute("id") for x in css(drv, "#sigma-layer line.zeroed")}
        drawn = {f"s-{v}-{e}" for v, es in ref.data()["fact"]["edges"].items() for e in es}
        assert drawn and drawn <= zeroed <= {f"s-{v}-{e}" for v, syn in want["synapses"].items() for e, _, _ in syn}
        drv.execute_script("document.getElementById('graph-box').scrollIntoView()")
        screenshot(drv, "view_serve_ablation.png")
    finally:
        srv.shutdown()
        srv.server_close()


def js_click(drv, elem):
    """A click event on an SVG element (lines overlap, so WebDriver's pointer click may land on a neighbour)."""
    drv.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", elem)


def stepped_to(c, ids, frame, **kw):
    """A fresh session of the same prompt stepped to just before `frame` (its simulator's state is that frame's
    input) and the frame itself."""
    s = ViewSession(c, **kw)
    s.load(ids)
    for _ in range(frame):
        s.step("sub")
    return s


def test_graph_edges_arithmetic_and_tour(browser, tmp_path):
    """The SVG graph of a dense (Table 1(b)) compile of a normfree model on a typed recall prompt: the prompt is
    encoded as RecallData encodes facts (one byte 0x80 + 8 key + value); at a communication sub-round the drawn
    edges are exactly the ones the Python side drew (same ids, same count); clicking one shows its weight and sigma
    equal to the simulator's; the arithmetic panel's values equal the simulator's and the tensor model's x_{t,l}
    and y_{t,l}; the guided tour runs from its first step to its last."""
    torch.manual_seed(
        1
    )  # the demo's kind of model: normfree, U = alibi (damping only, so the memory attribution holds)
    m = bdh_gpu.BDH(bdh_gpu.BDHConfig(n_head=2, d=8, N=16, n_layer=2, dropout=0.0, variant="normfree", U="alibi"))
    c = compile_model(TensorRunner(m).model, "dense")
    typed = b"a=3 b=5 : a"
    s = ViewSession(c, model=m, task="recall", neurons=24)
    s.load(list(typed))
    s.step("all")
    ids = s.ids
    assert ids == [0x80 + 8 * 0 + 3, 0x80 + 8 * 1 + 5, ord(":"), ord("a")]
    path = write_page(str(tmp_path / "graph.html"), s.data())
    drv = browser
    drv.get("file://" + path)
    assert [int(e.get_attribute("data-byte")) for e in css(drv, "#encoding code.enc")] == ids
    assert "0x80 + 8·key + value" in by_id(drv, "encoding-how").text
    assert len(css(drv, "#node-layer circle")) == sum(len(v) for v in s.shown.values())
    from bdh.teach import words

    assert len(css(drv, "#glossary dt")) == len(words.NOTATION)  # every symbol: the glossary of bdh.teach.words
    # the read of layer 1 in the last token: sigma holds the facts by now
    R = len(c.kernel.rounds)
    t = len(ids) - 1
    r_read = next(r for r, rd in enumerate(s.data()["rounds"]) if any(q["kind"] == "read" for q in rd["comm"]))
    f = t * (1 + 2 * R) + 1 + 2 * r_read
    fr = s.frames[f]
    assert fr["ph"] == 0 and fr["ed"]
    drv.execute_script(f"window.bdhView.go({f})")
    groups = dict(enumerate(s.data()["rounds"][r_read]["comm"]))
    want = {f"e-{c.network.edge_vars[groups[d[0]]['var']].group}-{d[1]}" for d in fr["ed"]}
    lines = css(drv, "#edge-layer line.msg")
    assert {ln.get_attribute("id") for ln in lines} == want and len(lines) == len(fr["ed"])
    ref = stepped_to(c, list(typed), f, task="recall", neurons=24)
    edges = ref.sim.state.edges
    j, eid, pre, post, w, msg, sig = fr["ed"][0]
    var = groups[j]["var"]
    g = c.network.groups[c.network.edge_vars[var].group]
    js_click(drv, by_id(drv, f"e-{g.name}-{eid}"))
    assert close(float(by_id(drv, "edge-w").get_attribute("data-value")), g.weight[eid])
    assert close(float(by_id(drv, "edge-sigma").get_attribute("data-value")), edges[var][eid])
    assert edges[var][eid] != 0 and int(g.indices[eid]) == post
    drv.execute_script("document.getElementById('graph-box').scrollIntoView()")
    screenshot(drv, "view_graph_communication.png")
    # the arithmetic panel at the I&F (threshold) and gate sub-rounds of the same layer
    tr = TensorRunner(m).trace(ids)
    shown_eq = {}
    for kind, var, key in (("threshold", "X", "x"), ("gate", "Y", "y")):
        r = next(r for r, rd in enumerate(s.data()["rounds"]) if any(q["kind"] == kind for q in rd["comp"]))
        f = t * (1 + 2 * R) + 2 + 2 * r
        ref = stepped_to(c, list(typed), f + 1, task="recall", neurons=24)
        live = np.asarray(ref.sim.node(var))
        i = int(max(s.shown["neurons"], key=lambda k: live[k]))
        assert live[i] > 0
        drv.execute_script(f"window.bdhView.go({f})")
        js_click(drv, by_id(drv, f"n-neurons-{i}"))
        box = wait(drv, lambda d: css(d, f"#arith .arith-rule[data-var='{var}']"))[0]
        layer = s.data()["rounds"][r]["layer"]
        assert close(float(box.get_attribute("data-sim")), live[i])
        assert close(float(box.get_attribute("data-calc")), live[i])
        assert abs(float(box.get_attribute("data-tensor")) - tr[key][layer, t, i]) <= 1e-5 * max(1, abs(live[i]))
        assert abs(live[i] - tr[key][layer, t, i]) <= 1e-5 * max(1, abs(live[i]))
        shown_eq[var] = (i, box.find_element("css selector", ".eq.nums").text)
    screenshot(drv, "view_arithmetic.png")
    # the tour, first step to last
    by_id(drv, "tour-start").click()
    tour = s.data()["tour"]
    seen = []
    for k in range(len(tour)):
        box = by_id(drv, "tour")
        assert box.get_attribute("data-step") == str(k)
        assert by_id(drv, "counter").get_attribute("data-frame") == str(tour[k]["frame"])
        seen.append(box.get_attribute("data-key"))
        if box.get_attribute("data-key") == "recall":  # the synapses that hold the fact, and the ablation
            fact = s.data()["fact"]
            want = {f"s-{v}-{e}" for v, es in fact["edges"].items() for e in es}
            assert {x.get_attribute("id") for x in css(drv, "#sigma-layer line.glow")} == want and want
            assert f"from {fact['p_before']:.3g} to {fact['p_after']:.3g}" in by_id(drv, "tour-text").text
            assert not by_id(drv, "tour-ablate").is_displayed()  # the static page keeps the precomputed numbers
            screenshot(drv, "view_tour.png")
        if k < len(tour) - 1:
            by_id(drv, "tour-next").click()
    assert by_id(drv, "tour").get_attribute("data-last") == "1" and seen[0] == "input" and seen[-1] == "predict"
    by_id(drv, "tour-end").click()
    assert not by_id(drv, "tour").is_displayed()
    # outputs a person reads: the top 5 as characters with softmax probabilities, also at their output nodes
    drv.execute_script(f"window.bdhView.go({len(s.frames) - 1})")
    logits = GraphRunner(c, "numba").logits(ids)[-1]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    top = list(np.argsort(-logits, kind="stable")[:5])
    for sel in ("#pred .top", "#out-labels text"):
        got = css(drv, sel)
        assert [int(e.get_attribute("data-byte")) for e in got] == top
        assert all(close(float(e.get_attribute("data-prob")), p[b]) for e, b in zip(got, top))
    glyph = s.label(top[0]) if top[0] >= 0x80 else s.data()["chars"][top[0]]  # a recall fact byte reads k=v
    assert css(drv, "#pred .top")[0].text == f"{glyph} {100 * p[top[0]]:.1f}%"
    check_viewer_doc(s, shown_eq, [t["key"] for t in tour])


def check_viewer_doc(s, shown_eq, tour_keys):
    """docs/viewer.md states only what this test saw: the encoded bytes, the arithmetic lines, the edge cap and
    the tour's length."""
    import re

    from bdh.teach import view
    from bdh.teach.view import EDGES

    with open(os.path.join(ROOT, "docs", "viewer.md"), encoding="utf-8") as f:
        doc = f.read()
    flat = " ".join(doc.split())
    for lab, b in zip(s.data()["labels"], s.ids):
        assert re.search(rf"\| `{re.escape(lab)}` \| `0x{b:02x}`", doc), (lab, b)
    for var, (i, eq) in shown_eq.items():
        assert f"| neuron {i} | `{var} = {var} + (" in doc and f"| `{eq}` |" in doc, (var, i, eq)
    assert f"the {EDGES} strongest" in flat and f"in {len(tour_keys)} steps" in flat
    caps = (view.NEURONS, view.HUB_CAP, view.SYNAPSES, view.SIGMA_SYNAPSES, view.EDGES)
    caps_text = (
        "the {} most active neurons (`--neurons`), the first {} nodes of every hub population, every output node, "
        "the {} strongest synapses per group of each shown node, the σ of the {} largest synapses per neuron and "
        "layer after every token, and the {} strongest messages"
    ).format(*caps)
    assert caps_text in flat, caps_text


def test_sign_colours_read_in_the_browser(browser, tmp_path):
    """One sign convention on the whole page, read off the rendered cells (issue 19's audit: the viewer's colour for
    the sign of a value was never read in a browser): a positive value is red (r > b), a negative one blue (b > r),
    0 the neutral grey; the output population at the end of a token holds both signs."""
    c = compile_model(TensorRunner(model()).model)
    s = ViewSession(c, synapses=4)
    s.load(list(b"hello"))
    s.step("all")
    drv = browser
    drv.get("file://" + write_page(str(tmp_path / "view.html"), s.data()))
    drv.execute_script(f"window.bdhView.go({len(s.frames) - 1})")
    seen = {1: 0, -1: 0}
    for cell in css(drv, "[id^='cell-out-']"):
        value = float(cell.get_attribute("title").rsplit("= ", 1)[1])
        rgb = drv.execute_script("return getComputedStyle(arguments[0]).backgroundColor", cell)
        r, g, b = (int(x) for x in rgb[rgb.index("(") + 1 : rgb.index(")")].split(",")[:3])
        if value > 0:
            assert r > b, (value, rgb)
            seen[1] += 1
        elif value < 0:
            assert b > r, (value, rgb)
            seen[-1] += 1
        else:
            assert r == g == b, (value, rgb)
    assert seen[1] > 0 and seen[-1] > 0, seen
