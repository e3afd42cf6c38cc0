"""`bdh view`: the viewer's data is the graph simulator's (official, dense and circuit compiles), and the CLI checks its
flags (the local server: tests/test_teach_serve.py). The browser tests are in
tests/test_teach_view_browser.py."""

import json

import numpy as np
import pytest
from small_models import small_model

import bdh_gpu
from bdh.cli import main
from bdh.teach.view import ViewError, ViewSession, page
from equivalence import GraphRunner, TensorRunner, compile_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


tiny = small_model


def close(a, b):
    """Equal to the 7 significant digits the page keeps."""
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


@pytest.mark.parametrize("variant,how", [("official", None), ("normfree", "dense"), ("normfree", "circuit")])
def test_frames_are_the_simulators_state(variant, how):
    """Every frame is one sub-round of the real simulator: T (1 + 2R) frames; at each token's end the logits and
    the prediction equal GraphRunner's (the graph that `bdh verify` checks against the tensor model, Eq. 6/8);
    X and Y at the end of each layer equal x_{t,l}, y_{t,l} of the shown neurons; the sigma series of every tracked
    synapse equals the simulator's edge state after each token."""
    m = tiny(variant)
    c = compile_model(TensorRunner(m).model, how)
    ids = list(b"abcab")
    s = ViewSession(c, backend="numba", neurons=12, synapses=4)
    s.load(ids)
    frames = s.step("all")
    R = len(c.kernel.rounds)
    assert len(frames) == len(ids) * (1 + 2 * R) and s.done
    runner = GraphRunner(c, "numba")
    shown = s.shown["neurons"]
    assert len(shown) == 12
    sig_expect = []
    ends = [f for f in frames if "end" in f]
    for t, out in enumerate(runner.feed(ids)):
        end = ends[t]
        assert end["end"]["pred"] == int(np.argmax(out["logits"]))
        for b, logit in end["end"]["top"]:
            assert close(logit, out["logits"][b])
        sig_expect.append({ev: runner.sim.state.edges[ev][e] for ev, e in s.tracked.items()})
        # state at the end of each layer of token t, rebuilt from the frames as the page does
        state = {}
        for f in frames:
            for v, (pos, val) in f["ch"].items():
                state[v] = (pos, val)
            done = np.cumsum([len(L) for L in c.kernel.layers])  # rounds done at each layer's end
            if f["t"] == t and f["k"] >= 0 and f["ph"] == 1 and f["k"] + 1 in done:
                layer = int(np.searchsorted(done, f["k"] + 1)) + 1
                for var, ref in (("X", out["x"][layer]), ("Y", out["y"][layer])):
                    dense = np.zeros(len(shown))
                    pos, val = state.get(var, ([], []))
                    dense[pos] = val
                    assert np.allclose(dense, ref[shown], rtol=1e-6, atol=1e-12), (t, layer, var)
    assert any(len(e) for e in s.tracked.values())
    for t, end in enumerate(ends):
        for ev, vals in end["end"]["sig"].items():
            assert all(close(a, b) for a, b in zip(vals, sig_expect[t][ev]))


def test_session_input_errors():
    """A prompt that is empty, too long or outside the vocabulary is a one-line ViewError, as is stepping before a
    prompt or asking for an unknown node; the session stays usable."""
    c = compile_model(TensorRunner(tiny()).model)
    s = ViewSession(c, max_prompt=4)
    with pytest.raises(ViewError, match="no prompt"):
        s.step()
    with pytest.raises(ViewError, match="at least 1 byte"):
        s.load([])
    with pytest.raises(ViewError, match="at most 4 bytes"):
        s.load(list(b"hello"))
    with pytest.raises(ViewError, match=r"\[0, 255\]"):
        s.load([300])
    s.load(list(b"hi"))
    with pytest.raises(ViewError, match="sub, round, token or all"):
        s.step("sideways")
    with pytest.raises(ViewError, match="unknown population"):
        s.node("nope", 0)
    with pytest.raises(ViewError, match=r"\[0, 31\]"):
        s.node("neurons", 32)
    assert len(s.step("token")) == 1 + 2 * len(c.kernel.rounds)


def test_node_on_demand_replays_sigma():
    """A node not in the page (serve mode) gets its synapses and the sigma of its strongest synapses after every
    token stepped so far, by replaying them; the values equal the live simulator's state."""
    c = compile_model(TensorRunner(tiny("normfree")).model, "dense")
    s = ViewSession(c, neurons=4)
    s.load(list(b"abc"))
    s.step("token"), s.step("token")
    hidden = next(i for i in range(c.network.n) if i not in set(s.shown["neurons"].tolist()))
    d = s.node("neurons", hidden)
    assert d["tokens"] == 2 and set(d["values"]) >= {"X", "Y"}
    state = s.sim.state
    assert close(d["values"]["X"], state.nodes["X"][hidden])
    sig = [x for x in d["synapses"] if "var" in x]
    assert sig and all(len(series) == 2 for x in sig for _, series in x["edges"])
    g = c.network.groups["Gs"]
    for x in sig:
        for other, series in x["edges"]:
            i, j = (hidden, other) if x["dir"] == "out" else (other, hidden)
            e = int(np.flatnonzero((g.source == i) & (g.indices == j))[0])
            assert close(series[-1], state.edges[x["var"]][e])


def test_page_is_self_contained():
    """The static page embeds its data and script and links nothing (no src=, href= or URL); '</' inside the
    data cannot end the script. (The page calls fetch() only in serve mode: the browser test of the static page
    runs it from a file:// URL.)"""
    c = compile_model(TensorRunner(tiny()).model)
    s = ViewSession(c, title="a </script> title")
    s.load(list(b"</"))
    s.step("all")
    html = page(s.data()).replace("http://www.w3.org/2000/svg", "SVG-NAMESPACE")  # a name, not a fetch
    assert "src=" not in html and "href=" not in html and "http://" not in html and "https://" not in html
    blob = html.split("id='bdh-data'>")[1].split("</script>")[0]
    assert json.loads(blob.replace("<\\/", "</"))["labels"] == ["<", "/"]


def test_view_cli(tmp_path, capsys):
    """`bdh view DIR --prompt T --out F` writes the page and says how big it is; bad flags are one line, exit 2."""
    d = str(tmp_path / "m")
    bdh_gpu.save(tiny(), d)
    out = tmp_path / "v.html"
    assert main(["view", d, "--prompt", "ab", "--out", str(out)]) == 0
    assert out.exists() and "2 tokens" in capsys.readouterr().out
    for argv, match in [
        (["view", d], "--prompt"),
        (["view", d, "--prompt", "abc", "--max-prompt", "2"], "--max-prompt"),
        (["view", d, "--prompt", "a", "--port", "70000", "--serve"], "--port"),
        (["view", d, "--prompt", "a", "--neurons", "0"], "--neurons"),
        (["view", d, "--prompt", "a", "--out", str(tmp_path / "no" / "v.html")], "--out"),
        (["view", d, "--prompt", "a", "--device", "cuda"], "--device"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and match in err, err
