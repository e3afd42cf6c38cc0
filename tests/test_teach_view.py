"""`bdh view`: the viewer's data is the graph simulator's (official, dense and circuit compiles), and the CLI checks its
flags (the local server: tests/test_teach_serve.py). The browser tests are in
tests/test_teach_view_browser.py."""

import json
import threading

import numpy as np
import pytest
from small_models import small_model

import bdh_gpu
from bdh.cli import main
from bdh.teach.view import ViewError, ViewSession, page
from equivalence import GraphRunner, TensorRunner, compile_model


def _has_cuda():
    """`--device cuda` is bad input only on a machine without CUDA (on a GPU machine it runs)."""
    import torch

    return torch.cuda.is_available()


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
        for b, logit, _p in end["end"]["top"]:
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
    (tmp_path / "m" / "train_state.json").write_text(json.dumps({"train_config": {"data": "recall"}}))
    assert main(["view", d, "--prompt", "m=3 : m", "--out", str(out)]) == 0  # the task read from train_state.json
    assert "3 tokens (recall encoding)" in capsys.readouterr().out
    assert main(["view", d, "--prompt", "m=3 : m", "--task", "text", "--out", str(out)]) == 0
    assert "7 tokens (text encoding)" in capsys.readouterr().out
    for argv, match in [
        (["view", d], "--prompt"),
        (["view", d, "--prompt", "abc", "--max-prompt", "2"], "--max-prompt"),
        (["view", d, "--prompt", "a", "--port", "70000", "--serve"], "--port"),
        (["view", d, "--prompt", "a", "--neurons", "0"], "--neurons"),
        (["view", d, "--prompt", "a", "--out", str(tmp_path / "no" / "v.html")], "--out"),
        (["view", d, "--prompt", "a", "--task", "poem"], "--task"),
        *([] if _has_cuda() else [(["view", d, "--prompt", "a", "--device", "cuda"], "--device")]),  # no CUDA here
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and match in err, err


def test_recall_prompt_is_encoded_as_trained(tmp_path):
    """A typed `m=3 k=5 : m` on a recall model is the task's bytes (RecallData: a fact is one byte 0x80 + 8 key +
    value; ':' and the query key stay ASCII); encoding twice changes nothing; a text model keeps the bytes; the
    CLI reads the task from train_state.json."""
    from bdh.commands.view import trained_task
    from bdh.teach.view import encode_prompt
    from bdh_gpu.data import RECALL_KEYS, RECALL_VALUES

    ids, how = encode_prompt(list(b"m=3 k=5 : m"), "recall")
    pair = lambda k, v: 0x80 + len(RECALL_VALUES) * RECALL_KEYS.index(ord(k)) + RECALL_VALUES.index(ord(v))  # noqa: E731
    assert (
        ids == [pair("m", "3"), pair("k", "5"), ord(":"), ord("m")] == [0x80 + 8 * 12 + 3, 0x80 + 8 * 10 + 5, 58, 109]
    )
    assert encode_prompt(ids, "recall")[0] == ids and "0x80 + 8·key + value" in how
    assert encode_prompt(list(b"m=3 k"), "text")[0] == list(b"m=3 k")
    with pytest.raises(ViewError, match="task"):
        encode_prompt([1], "poem")
    (tmp_path / "train_state.json").write_text(json.dumps({"train_config": {"data": "recall:8"}}))
    assert trained_task(str(tmp_path)) == "recall" and trained_task(str(tmp_path / "nowhere")) == "text"
    c = compile_model(TensorRunner(tiny()).model)
    s = ViewSession(c, task="recall")
    d = s.load(list(b"m=3 : m"))
    assert d["ids"] == [pair("m", "3"), 58, 109] and d["labels"][0] == "m=3" and d["encoding"]["task"] == "recall"


def test_drawn_edges_and_predictions_are_the_simulators():
    """Each edge drawn at a communication sub-round joins two shown nodes, carries weight x message computed from
    the simulator's state before that sub-round (the strongest first, at most `edges` per rule; '+N weaker' adds
    up to the messages the simulator sent), and the top 5 are softmax probabilities of GraphRunner's logits."""
    m = tiny("normfree")
    c = compile_model(TensorRunner(m).model, "circuit")
    s = ViewSession(c, neurons=10, edges=5, model=m)
    ids = list(b"abca")
    s.load(ids)
    ref = ViewSession(c, neurons=10, edges=5)
    ref.load(ids)
    net, checked = c.network, 0
    for f in s.step("all"):
        if f["ph"] == 0:
            rnd = c.kernel.rounds[f["k"]]
            for j, n in f["ev"].items():
                drawn = [d for d in f["ed"] if d[0] == j]
                assert len(drawn) <= 5 and len(drawn) + f["more"][j] == max(n, len(drawn))
                for _, eid, pre, post, w, msg, _sig in drawn:
                    rule = rnd.communication[j]
                    if rule.kind != "send":
                        continue
                    g = net.groups[rule.group]
                    assert pre in s._pos[g.pre] and post in s._pos[g.post] and int(g.indices[eid]) == post
                    src = np.asarray(ref.sim.node(rule.src[0]))[pre]
                    assert close(w, g.weight[eid]) and close(msg, g.weight[eid] * src)
                    checked += 1
                mags = [abs(d[5]) for d in drawn]
                assert mags == sorted(mags, reverse=True)
        ref.step("sub")
    assert checked > 0
    logits = GraphRunner(c, "numba").logits(ids)
    ends = [f["end"] for f in s.frames if "end" in f]
    for t, e in enumerate(ends):
        p = np.exp(logits[t] - logits[t].max())
        p /= p.sum()
        assert [b for b, _, _ in e["top"]] == list(np.argsort(-logits[t], kind="stable")[:5])
        assert all(close(q, p[b]) for b, _, q in e["top"])
    d = s.data()
    assert len(d["layout"]["neurons"]) == 10 and all(175 <= y <= 535 for _, y in d["layout"]["neurons"])
    assert d["chars"][ord("a")] == "a" and d["chars"][10] == "\\x0a" and d["chars"][32] == "␣"


def test_serve_encodes_a_typed_recall_prompt():
    """--serve on a recall model: a client's typed `m=3 k=5 : m` is loaded as the task's bytes (its session keeps
    the template's task), and the page data says how it was encoded."""
    import urllib.request

    from bdh.teach.serve import make_server

    c = compile_model(TensorRunner(tiny()).model)
    srv = make_server(ViewSession(c, task="recall", neurons=8), "127.0.0.1", 0, log=lambda line: None)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        r = urllib.request.Request(
            f"http://127.0.0.1:{srv.server_address[1]}/api/load",
            data=json.dumps({"prompt": "m=3 k=5 : m"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(r, timeout=30) as resp:
            status, d = resp.status, json.loads(resp.read())
        assert status == 200 and d["ids"] == [0x80 + 8 * 12 + 3, 0x80 + 8 * 10 + 5, ord(":"), ord("m")]
        assert d["encoding"]["task"] == "recall" and d["labels"][:2] == ["m=3", "k=5"]
    finally:
        srv.shutdown()
        srv.server_close()
