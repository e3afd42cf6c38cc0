// bdh view: step a prompt through a BDH neuron graph. Hand-written, no libraries, nothing fetched in a static
// page; with --serve the same page asks the local server (/api/load, /api/step, /api/node) for new frames.
// Data layout: see bdh/teach/view.py (frames hold, per sub-round, the changed variables of the shown nodes).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, text) => {
    const e = document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const fmt = (v) => (v === 0 ? "0" : Number(v).toPrecision(6).replace(/\.?0+(e|$)/, "$1"));
  let D = JSON.parse($("bdh-data").textContent);
  const SERVE = D.mode === "serve";
  let cur = -1, selected = null, popVar = {}, changes = {}, cache = {}, sigSeries = {}, tokenEnds = [], busy = false;
  let onDemand = null; // a node opened through /api/node (serve mode)

  // ---- derived indices ------------------------------------------------------------------------------------
  function popOf(v) {
    for (const p of D.populations) if (p.variables.indexOf(v) >= 0) return p.name;
    return null;
  }
  function index() {
    changes = {}; cache = {}; sigSeries = {}; tokenEnds = [];
    (D.frames || []).forEach((f, i) => addFrame(f, i));
  }
  function addFrame(f, i) {
    for (const v in f.ch) (changes[v] = changes[v] || []).push(i);
    if (f.end) {
      tokenEnds[f.t] = i;
      for (const ev in f.end.sig) {
        const s = (sigSeries[ev] = sigSeries[ev] || []);
        f.end.sig[ev].forEach((val, k) => { (s[k] = s[k] || [])[f.t] = val; });
      }
    }
  }
  function lastChange(v, f) { // largest frame index <= f that changed v, or -1
    const c = changes[v] || [];
    let lo = 0, hi = c.length - 1, best = -1;
    while (lo <= hi) { const m = (lo + hi) >> 1; if (c[m] <= f) { best = c[m]; lo = m + 1; } else hi = m - 1; }
    return best;
  }
  function values(v, f) { // Float64Array over the shown nodes of v's population at frame f
    const pop = popOf(v), n = D.shown[pop].length, at = lastChange(v, f), key = v + "@" + at;
    if (cache[key]) return cache[key];
    const out = new Float64Array(n);
    if (at >= 0) { const [pos, val] = D.frames[at].ch[v]; pos.forEach((p, k) => { out[p] = val[k]; }); }
    return (cache[key] = out);
  }
  function tokensDone(f) { // tokens completed at frame f
    if (f < 0) return 0;
    const fr = D.frames[f];
    return fr.end ? fr.t + 1 : fr.t;
  }
  function layerEnd(t, l) { // frame of the last sub-round of layer l in token t (if received)
    let best = -1;
    for (let i = (t > 0 && tokenEnds[t - 1] !== undefined ? tokenEnds[t - 1] + 1 : 0); i < D.frames.length; i++) {
      const fr = D.frames[i];
      if (fr.t !== t) break;
      if (fr.k >= 0 && D.rounds[fr.k].layer === l && fr.ph === 1) best = i;
    }
    return best;
  }
  function label(pop, i) { return pop === "neurons" ? "neuron " + i : pop + "[" + i + "]"; }

  // ---- building the page ----------------------------------------------------------------------------------
  function build() {
    $("title").textContent = "bdh view: " + D.title;
    $("summary").textContent = D.summary + " · kernel " + D.kernel + " · backend " + D.backend;
    const notes = $("notes"); notes.innerHTML = "";
    (D.notes || []).forEach((n) => notes.appendChild(el("li", {}, n)));
    $("prompt-box").hidden = !SERVE; $("find-box").hidden = !SERVE; $("static-note").hidden = SERVE;
    const layer = $("layer");
    while (layer.options.length > 1) layer.remove(1);
    for (let l = 1; l <= D.layers; l++) layer.appendChild(el("option", { value: l }, "end of layer " + l));
    const tokens = $("tokens"); tokens.innerHTML = "";
    (D.labels || []).forEach((lab, t) => {
      const s = el("span", { class: "tok", id: "tok-" + t, title: "token " + (t + 1) + ": byte " + D.ids[t] }, lab);
      s.appendChild(el("small", { id: "tokpred-" + t }, "·"));
      s.onclick = () => gotoToken(t);
      tokens.appendChild(s);
    });
    const pops = $("pops"); pops.innerHTML = "";
    if (!D.shown) return;
    for (const p of D.populations) {
      if (!D.shown[p.name] || !D.shown[p.name].length) continue;
      const box = el("section", { class: "pop", id: "pop-" + p.name });
      const h = el("h2", {}, (p.name === "neurons" ? "neurons" : "population " + p.name) + " (" +
        D.shown[p.name].length + " of " + p.size + " shown)");
      box.appendChild(h);
      const sel = el("select", { id: "var-" + p.name });
      p.variables.forEach((v) => sel.appendChild(el("option", { value: v }, v)));
      const paired = [].concat(...p.ei), free = p.variables.filter((v) => paired.indexOf(v) < 0);
      const def = p.name === "neurons" && p.variables.indexOf("Y") >= 0 ? "Y" : (free[0] || p.variables[0]);
      popVar[p.name] = popVar[p.name] && p.variables.indexOf(popVar[p.name]) >= 0 ? popVar[p.name] : def;
      sel.value = popVar[p.name];
      sel.onchange = () => { popVar[p.name] = sel.value; render(); };
      const leg = el("div", { class: "legend" });
      leg.appendChild(document.createTextNode("colour by "));
      leg.appendChild(sel);
      leg.appendChild(el("span", { id: "scale-" + p.name }));
      box.appendChild(leg);
      box.appendChild(grid(p.name, "cell-" + p.name));
      if (p.ei.length) {
        const ei = el("div", { class: "ei" });
        const e = el("div"), i = el("div");
        e.appendChild(el("h3", { class: "E" }, "excitatory circuit: " + p.ei.map((x) => x[0]).join(" + ")));
        e.appendChild(el("span", { class: "legend", id: "scale-E-" + p.name }));
        e.appendChild(grid(p.name, "ecell-" + p.name));
        i.appendChild(el("h3", { class: "I" }, "inhibitory circuit: " + p.ei.map((x) => x[1]).join(" + ")));
        i.appendChild(el("span", { class: "legend", id: "scale-I-" + p.name }));
        i.appendChild(grid(p.name, "icell-" + p.name));
        ei.appendChild(e); ei.appendChild(i);
        box.appendChild(ei);
      }
      pops.appendChild(box);
    }
  }
  function grid(pop, prefix) {
    const g = el("div", { class: "grid", id: "grid-" + prefix });
    D.shown[pop].forEach((i, k) => {
      const c = el("div", { class: "cell", id: prefix + "-" + i, "data-pos": k });
      c.onclick = () => select(pop, i);
      g.appendChild(c);
    });
    return g;
  }

  // ---- rendering one frame --------------------------------------------------------------------------------
  function colour(v, s) {
    if (v === 0 || s === 0) return "#eee";
    const a = Math.min(1, Math.abs(v) / s);
    const [r, g, b] = v > 0 ? [214, 39, 40] : [31, 119, 180];
    const mix = (c) => Math.round(255 + (c - 255) * (0.15 + 0.85 * a));
    return "rgb(" + mix(r) + "," + mix(g) + "," + mix(b) + ")";
  }
  function paint(pop, prefix, vals, name, scaleId) {
    const thr = Math.abs(parseFloat($("threshold").value) || 0);
    let s = 0, above = 0;
    for (const v of vals) s = Math.max(s, Math.abs(v));
    D.shown[pop].forEach((i, k) => {
      const c = $(prefix + "-" + i), v = vals[k];
      c.style.background = colour(v, s);
      const on = Math.abs(v) > thr;
      above += on;
      c.classList.toggle("dim", !on);
      c.title = label(pop, i) + ": " + name + " = " + fmt(v);
    });
    if (scaleId && $(scaleId)) $(scaleId).innerHTML = " <span class='bar'></span> " + (s ? "-" + fmt(s) + " … " + fmt(s) : "all 0");
    return above;
  }
  function frameForDisplay() { // the frame whose state the grids show (the layer filter picks a layer's end)
    const l = parseInt($("layer").value, 10);
    if (!l || cur < 0) return cur;
    const t = D.frames[cur].t, f = layerEnd(t, l);
    return f >= 0 && f <= cur ? f : (f >= 0 ? f : cur);
  }
  function render() {
    if (!D.shown) { $("counter").textContent = "type a prompt and press Run"; return; }
    const T = D.ids.length, f = cur, fr = f >= 0 ? D.frames[f] : null;
    const c = $("counter");
    c.dataset.frame = f; c.dataset.token = fr ? fr.t : -1; c.dataset.round = fr ? fr.k : -1;
    c.dataset.phase = fr ? (fr.ph === 0 ? "communication" : fr.ph === 1 ? "computation" : "input") : "";
    let text = "step " + (f + 1) + " of " + D.total_frames;
    if (fr) {
      text += " · token " + (fr.t + 1) + "/" + T + " '" + D.labels[fr.t] + "'";
      if (fr.k < 0) text += " · input: X, Y set to the token's boundary values";
      else text += " · round " + (fr.k + 1) + "/" + D.rounds.length + " (" + D.rounds[fr.k].label + ", layer " +
        D.rounds[fr.k].layer + ") · " + (fr.ph === 0 ? "communication" : "computation") + " sub-round";
    } else text += " · before the first token";
    c.textContent = text;
    // tokens
    const done = tokensDone(f);
    D.labels.forEach((lab, t) => {
      const s = $("tok-" + t);
      s.classList.toggle("cur", fr && fr.t === t);
      s.classList.toggle("done", t < done);
      const e = tokenEnds[t];
      $("tokpred-" + t).textContent = e !== undefined && e <= f ? D.byte_labels[D.frames[e].end.pred] : "·";
    });
    renderRules(fr);
    renderPred(f);
    const g = frameForDisplay();
    let above = 0, total = 0;
    for (const p of D.populations) {
      if (!D.shown[p.name] || !D.shown[p.name].length) continue;
      const v = popVar[p.name];
      above += paint(p.name, "cell-" + p.name, values(v, g), v, "scale-" + p.name);
      total += D.shown[p.name].length;
      if (p.ei.length) {
        const n = D.shown[p.name].length, E = new Float64Array(n), I = new Float64Array(n);
        p.ei.forEach(([a, b]) => { const va = values(a, g), vb = values(b, g); for (let k = 0; k < n; k++) { E[k] += va[k]; I[k] += vb[k]; } });
        paint(p.name, "ecell-" + p.name, E, p.ei.map((x) => x[0]).join("+"), "scale-E-" + p.name);
        paint(p.name, "icell-" + p.name, I, p.ei.map((x) => x[1]).join("+"), "scale-I-" + p.name);
      }
    }
    $("above").textContent = above + " of " + total + " shown nodes above the threshold" +
      (g !== cur && g >= 0 ? " (grids at the end of layer " + $("layer").value + " of this token)" : "");
    if (selected) renderDetail();
  }
  function renderRules(fr) {
    const box = $("rules"); box.innerHTML = "";
    if (!fr) { box.appendChild(el("p", {}, "Step forward to run the kernel.")); return; }
    if (fr.k < 0) {
      box.appendChild(el("h2", {}, "Token input"));
      box.appendChild(el("p", {}, D.boundary));
      return;
    }
    const r = D.rounds[fr.k];
    box.appendChild(el("h2", { id: "round-label" }, "Round " + (fr.k + 1) + " of " + D.rounds.length + ": " + r.label + " (layer " + r.layer + ")"));
    const comm = el("div"), comp = el("div");
    comm.appendChild(el("span", { class: "phase " + (fr.ph === 0 ? "on" : "off") }, "communication (messages along synapses)"));
    const ol = el("ol", { id: "comm-rules" });
    r.comm.forEach((m, j) => {
      const li = el("li", {}, m.text);
      if (fr.ph === 0 && fr.ev) { const n = fr.ev[j] || 0; li.dataset.count = n + " messages"; li.classList.toggle("fired", n > 0); }
      ol.appendChild(li);
    });
    if (!r.comm.length) ol.appendChild(el("li", {}, "(none)"));
    comm.appendChild(ol);
    comp.appendChild(el("span", { class: "phase " + (fr.ph === 1 ? "on" : "off") }, "computation (local at each node)"));
    const ol2 = el("ol", { id: "comp-rules" });
    r.comp.forEach((m) => {
      const li = el("li", {}, m.text);
      if (fr.ph === 1 && fr.nch) {
        if (m.kind === "damp") { li.dataset.count = "every synapse of " + m.dst; li.classList.add("fired"); }
        else { const n = fr.nch[m.dst] || 0; li.dataset.count = m.dst + ": " + n + " nodes changed"; li.classList.toggle("fired", n > 0); }
      }
      ol2.appendChild(li);
    });
    if (!r.comp.length) ol2.appendChild(el("li", {}, "(none)"));
    comp.appendChild(ol2);
    box.appendChild(comm); box.appendChild(comp);
  }
  function renderPred(f) {
    const box = $("pred"); box.innerHTML = "";
    const t = tokensDone(f) - 1;
    if (t < 0) return;
    const e = D.frames[tokenEnds[t]].end;
    box.appendChild(el("span", {}, "after token " + (t + 1) + " '" + D.labels[t] + "' the output nodes (" + D.logits + ") predict: "));
    e.top.forEach(([b, l], k) => {
      box.appendChild(el("span", { class: "top", id: "top-" + k, "data-byte": b, "data-logit": l },
        (k ? ", " : "") + D.byte_labels[b] + " (" + fmt(l) + ")"));
    });
  }

  // ---- the node panel -------------------------------------------------------------------------------------
  function select(pop, i) {
    document.querySelectorAll(".cell.sel").forEach((c) => c.classList.remove("sel"));
    const pos = D.shown[pop] ? D.shown[pop].indexOf(i) : -1;
    if (pos < 0) { if (SERVE) openNode(pop, i); else showError(label(pop, i) + " is not in this page (the most active nodes are); run bdh view --serve to open any node"); return; }
    selected = { pop: pop, i: i, pos: pos }; onDemand = null;
    ["cell-", "ecell-", "icell-"].forEach((p) => { const c = $(p + pop + "-" + i); if (c) c.classList.add("sel"); });
    renderDetail();
  }
  function sparkline(series, t) {
    const w = 120, h = 26, n = series.length;
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "spark"); svg.setAttribute("width", w); svg.setAttribute("height", h);
    let lo = 0, hi = 0;
    series.forEach((v) => { if (v !== undefined) { lo = Math.min(lo, v); hi = Math.max(hi, v); } });
    const y = (v) => (hi === lo ? h / 2 : h - 2 - (h - 4) * (v - lo) / (hi - lo));
    const x = (k) => (n <= 1 ? w / 2 : 2 + (w - 4) * k / (n - 1));
    const pts = series.map((v, k) => (v === undefined ? null : x(k) + "," + y(v))).filter((p) => p).join(" ");
    const line = document.createElementNS(svg.namespaceURI, "polyline");
    line.setAttribute("points", pts); line.setAttribute("fill", "none"); line.setAttribute("stroke", "#444");
    svg.appendChild(line);
    const zero = document.createElementNS(svg.namespaceURI, "line");
    zero.setAttribute("x1", 0); zero.setAttribute("x2", w); zero.setAttribute("y1", y(0)); zero.setAttribute("y2", y(0));
    zero.setAttribute("stroke", "#ccc"); svg.insertBefore(zero, line);
    if (t >= 0 && t < n) {
      const dot = document.createElementNS(svg.namespaceURI, "circle");
      dot.setAttribute("cx", x(t)); dot.setAttribute("cy", y(series[t] || 0)); dot.setAttribute("r", 3); dot.setAttribute("fill", "#c60");
      svg.appendChild(dot);
    }
    return svg;
  }
  function renderDetail() {
    const box = $("detail"); box.innerHTML = "";
    const node = onDemand || selected;
    if (!node) return;
    const pop = node.pop, i = node.i;
    box.appendChild(el("h2", { id: "detail-title" }, label(pop, i)));
    const p = D.populations.find((q) => q.name === pop);
    const t = tokensDone(cur) - 1;
    const tab = el("table", { class: "vals", id: "detail-values" });
    const g = frameForDisplay();
    p.variables.forEach((v) => {
      const val = onDemand ? onDemand.values[v] : values(v, g)[node.pos];
      const tr = el("tr", { "data-var": v, "data-value": val });
      tr.appendChild(el("td", {}, v)); tr.appendChild(el("td", {}, fmt(val)));
      tab.appendChild(tr);
    });
    box.appendChild(el("h3", {}, onDemand ? "variables after " + onDemand.tokens + " token(s) (opened on demand)" :
      "variables at this step"));
    box.appendChild(tab);
    const syn = onDemand ? onDemand.synapses : D.synapses[pop][node.pos];
    const l = parseInt($("layer").value, 10);
    const thr = Math.abs(parseFloat($("threshold").value) || 0);
    for (const kind of ["E", "I", "", "state"]) {
      const part = syn.filter((s) => (kind === "state" ? !!s.var : !s.var && s.sign === kind));
      if (!part.length) continue;
      box.appendChild(el("h3", { class: kind }, kind === "E" ? "excitatory synapses" : kind === "I" ? "inhibitory synapses" :
        kind === "state" ? "synaptic state σ (largest |σ| at the end of the prompt)" : "other synapses"));
      for (const s of part) {
        if (s.var && l && s.layer !== l) continue;
        const dirText = s.dir === "in" ? "in from " + s.pop : "out to " + s.pop;
        box.appendChild(el("div", { class: "legend" }, (s.var ? s.var + " (layer " + s.layer + ") on " + s.group : s.group) +
          ", " + dirText + ": " + s.total + " synapses, " + (s.var ? "largest " : "strongest ") + s.edges.length + " shown"));
        const ul = el("ul", { class: "syn-list", "data-group": s.group, "data-dir": s.dir, "data-var": s.var || "" });
        for (const [o, w] of s.edges) {
          let li;
          if (s.var) {
            const series = onDemand ? w : ((sigSeries[s.var] || [])[w] || []);
            const val = t >= 0 && series[t] !== undefined ? series[t] : 0;
            if (Math.abs(val) <= thr && thr > 0) continue;
            li = el("li", { class: "syn", "data-other": o, "data-value": val, "data-pop": s.pop },
              (s.dir === "in" ? label(s.pop, o) + " → here" : "here → " + label(s.pop, o)) + ": σ = " + fmt(val) +
              (t >= 0 ? " after token " + (t + 1) : ""));
            li.appendChild(sparkline(series, t));
          } else {
            li = el("li", { class: "syn " + s.sign, "data-other": o, "data-value": w, "data-pop": s.pop },
              (s.dir === "in" ? label(s.pop, o) + " → here" : "here → " + label(s.pop, o)) + ": weight " + fmt(w));
          }
          li.onclick = () => select(s.pop, o);
          ul.appendChild(li);
        }
        box.appendChild(ul);
      }
    }
  }
  async function openNode(pop, i) {
    try {
      const r = await api("/api/node?pop=" + encodeURIComponent(pop) + "&i=" + i);
      onDemand = Object.assign(r, { i: r.index }); selected = null;
      renderDetail();
    } catch (e) { showError(e.message); }
  }

  // ---- navigation -----------------------------------------------------------------------------------------
  function showError(m) { $("error").textContent = m || ""; }
  async function api(url, body) {
    const r = await fetch(url, body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const j = await r.json();
    if (!r.ok) throw new Error(j.error || ("HTTP " + r.status));
    return j;
  }
  function complete() { return D.frames && D.frames.length >= D.total_frames; }
  async function more(by) { // serve: ask the live simulator for the next frames
    if (!SERVE || complete() || busy) return false;
    busy = true; $("busy").textContent = "stepping the simulator …";
    try {
      const r = await api("/api/step", { by: by });
      r.frames.forEach((f) => { D.frames.push(f); addFrame(f, D.frames.length - 1); });
      return r.frames.length > 0;
    } catch (e) { showError(e.message); return false; } finally { busy = false; $("busy").textContent = ""; }
  }
  function findNext(pred) { for (let i = cur + 1; i < D.frames.length; i++) if (pred(D.frames[i])) return i; return -1; }
  function findPrev(pred) { for (let i = cur - 1; i >= 0; i--) if (pred(D.frames[i])) return i; return -1; }
  async function forward(pred, by) {
    if (!D.frames || busy) return;
    let i = findNext(pred);
    if (i < 0 && await more(by)) i = findNext(pred);
    if (i < 0) i = D.frames.length - 1;
    go(i);
  }
  function go(i) { showError(""); cur = Math.max(-1, Math.min(i, (D.frames || []).length - 1)); render(); }
  async function gotoToken(t) {
    while (tokenEnds[t] === undefined && SERVE && !complete()) { if (!await more("token")) break; }
    if (tokenEnds[t] !== undefined) go(tokenEnds[t]);
  }
  const isRound = (f) => f.ph === 1 || f.ph === -1, isEnd = (f) => !!f.end;
  const actions = {
    "first": () => go(0),
    "prev-token": () => go(findPrev(isEnd)),
    "prev-round": () => go(findPrev(isRound)),
    "prev-sub": () => go(cur - 1),
    "next-sub": () => forward(() => true, "sub"),
    "next-round": () => forward(isRound, "round"),
    "next-token": () => forward(isEnd, "token"),
    "last": async () => { if (SERVE) while (!complete() && await more("all")) {} go(D.frames.length - 1); },
  };
  for (const id in actions) $(id).onclick = actions[id];
  $("layer").onchange = render; $("threshold").oninput = render;
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT") return;
    const k = { ArrowRight: "next-sub", ArrowLeft: "prev-sub", ArrowDown: "next-round", ArrowUp: "prev-round",
      PageDown: "next-token", PageUp: "prev-token", Home: "first", End: "last" }[e.key];
    if (k) { e.preventDefault(); actions[k](); }
  });
  if (SERVE) {
    const run = async () => {
      showError(""); $("busy").textContent = "loading …";
      try {
        const d = await api("/api/load", { prompt: $("prompt").value });
        D = Object.assign(d, { mode: "serve" }); selected = null; onDemand = null; cur = -1;
        index(); build(); await more("sub"); go(0);
      } catch (e) { showError(e.message); } finally { $("busy").textContent = ""; }
    };
    $("run").onclick = run;
    $("prompt").addEventListener("keydown", (e) => { if (e.key === "Enter") run(); });
    $("find-go").onclick = () => {
      const s = $("find").value.trim(), m = s.match(/^(?:([A-Za-z_]\w*)\s*[:\[]\s*)?(\d+)\]?$/);
      if (!m) { showError("open node: expected an index like 17 or a population and index like res:3, got '" + s + "'"); return; }
      select(m[1] || "neurons", parseInt(m[2], 10));
    };
  }
  index(); build();
  if (D.frames && D.frames.length) go(0); else render();
  window.bdhView = { data: () => D, cursor: () => cur, go: go };
})();
