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
  let selEdge = null, glowKind = null, tourAt = -1, posMap = {};

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
  // names come from view.py's name() (one place for the page's words: layers l = 1..L, sigma, nodes)
  function label(pop, i) { // a shown node's name is view.py's (bdh.teach.names); any other follows the same scheme
    const k = D.names && D.names[pop] && D.shown[pop] ? D.shown[pop].indexOf(i) : -1;
    if (k >= 0) return D.names[pop][k];
    if (pop === "neurons") return "neuron " + i;
    const d = D.words && D.words.d;
    return pop === "att" && d ? "att[h" + Math.floor(i / d) + "," + (i % d) + "]" : pop + "[" + i + "]";
  }
  function layerName(l) { return D.words ? D.words.layer[l - 1] : "layer " + l; }
  function sigmaName(v) { return D.words && D.words.sigma[v] ? D.words.sigma[v] : v; }
  function glyph(b) { // a byte as a person reads it (recall facts as k=v)
    return D.encoding && D.encoding.task === "recall" && b >= 128 ? D.byte_labels[b] : D.chars[b];
  }

  // ---- building the page ----------------------------------------------------------------------------------
  function build() {
    $("title").textContent = "bdh view: " + D.title;
    $("summary").textContent = D.summary + " · kernel " + D.kernel + " · backend " + D.backend;
    const notes = $("notes"); notes.innerHTML = "";
    (D.notes || []).forEach((n) => notes.appendChild(el("li", {}, n)));
    $("prompt-box").hidden = !SERVE; $("find-box").hidden = !SERVE; $("static-note").hidden = SERVE;
    const layer = $("layer");
    while (layer.options.length > 1) layer.remove(1);
    for (let l = 1; l <= D.layers; l++) layer.appendChild(el("option", { value: l }, "end of " + layerName(l)));
    const tokens = $("tokens"); tokens.innerHTML = "";
    (D.labels || []).forEach((lab, t) => {
      const s = el("span", { class: "tok", id: "tok-" + t, title: "token " + (t + 1) + ": byte " + D.ids[t] }, lab);
      s.appendChild(el("small", { id: "tokpred-" + t }, "·"));
      s.onclick = () => gotoToken(t);
      tokens.appendChild(s);
    });
    const pops = $("pops"); pops.innerHTML = "";
    buildEncoding(); buildGraph(); buildLegend();
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
  function scaleText(vals) { // the colour bar of the data's own range and sign
    let lo = 0, hi = 0;
    for (const v of vals) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    if (!lo && !hi) return " all 0";
    const cls = lo >= 0 ? "bar pos" : hi <= 0 ? "bar neg" : "bar";
    return " <span class='" + cls + "'></span> " + fmt(lo) + " … " + fmt(hi) + (lo >= 0 ? " (all ≥ 0)" : hi <= 0 ? " (all ≤ 0)" : "");
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
    if (scaleId && $(scaleId)) $(scaleId).innerHTML = scaleText(vals);
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
      else text += " · round " + (fr.k + 1) + "/" + D.rounds.length + " (" + D.rounds[fr.k].label + ", " +
        layerName(D.rounds[fr.k].layer) + ") · " + (fr.ph === 0 ? "communication" : "computation") + " sub-round";
    } else text += " · before the first token";
    c.textContent = text;
    // tokens
    const done = tokensDone(f);
    D.labels.forEach((lab, t) => {
      const s = $("tok-" + t);
      s.classList.toggle("cur", fr && fr.t === t);
      s.classList.toggle("done", t < done);
      const e = tokenEnds[t];
      $("tokpred-" + t).textContent = e !== undefined && e <= f ? glyph(D.frames[e].end.pred) : "·";
    });
    renderRules(fr);
    renderPred(f);
    renderGraph(fr);
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
      (g !== cur && g >= 0 ? " (grids at the end of " + layerName(parseInt($("layer").value, 10)) + " of this token)" : "");
    if (selected || selEdge) renderDetail();
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
    box.appendChild(el("h2", { id: "round-label", title: roundHelp(r.label) }, "Round " + (fr.k + 1) + " of " + D.rounds.length + ": " + r.label + " (" + layerName(r.layer) + ")"));
    const comm = el("div"), comp = el("div");
    comm.appendChild(el("span", { class: "phase " + (fr.ph === 0 ? "on" : "off") }, "communication (messages along synapses)"));
    const ol = el("ol", { id: "comm-rules" });
    r.comm.forEach((m, j) => {
      const li = el("li", { title: ruleHelp(m) }, m.text);
      if (fr.ph === 0 && fr.ev) { const n = fr.ev[j] || 0; li.dataset.count = n + " messages"; li.classList.toggle("fired", n > 0); }
      ol.appendChild(li);
    });
    if (!r.comm.length) ol.appendChild(el("li", {}, "(none)"));
    comm.appendChild(ol);
    comp.appendChild(el("span", { class: "phase " + (fr.ph === 1 ? "on" : "off") }, "computation (local at each node)"));
    const ol2 = el("ol", { id: "comp-rules" });
    r.comp.forEach((m) => {
      const li = el("li", { title: ruleHelp(m) }, m.text);
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
    box.appendChild(el("span", { title: "softmax over all " + D.chars.length + " output nodes' values " + D.logits },
      "after token " + (t + 1) + " '" + D.labels[t] + "' the next byte is, top 5: "));
    e.top.forEach(([b, l, p], k) => {
      box.appendChild(el("span", { class: "top", id: "top-" + k, "data-byte": b, "data-logit": l, "data-prob": p,
        title: "byte " + b + " (0x" + b.toString(16) + "), logit " + fmt(l) }, (k ? ", " : "") + glyph(b) + " " + (100 * p).toFixed(1) + "%"));
    });
  }

  // ---- the node panel -------------------------------------------------------------------------------------
  function select(pop, i) {
    document.querySelectorAll(".cell.sel").forEach((c) => c.classList.remove("sel"));
    const pos = D.shown[pop] ? D.shown[pop].indexOf(i) : -1;
    if (pos < 0) { if (SERVE) openNode(pop, i); else showError(label(pop, i) + " is not in this page (the most active nodes are); run bdh view --serve to open any node"); return; }
    selected = { pop: pop, i: i, pos: pos }; onDemand = null; selEdge = null;
    document.querySelectorAll("#graph-svg circle.sel").forEach((c) => c.classList.remove("sel"));
    const nd = $("n-" + pop + "-" + i); if (nd) nd.classList.add("sel");
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
    if (selEdge) return renderEdge(box);
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
    if (!onDemand) renderArithmetic(box, pop, i, node.pos);
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
        box.appendChild(el("div", { class: "legend" }, (s.var ? s.var + " = " + sigmaName(s.var) + " on " + s.group : s.group) +
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

  // ---- the graph, drawn as a graph (SVG; positions from bdh/teach/layout.py, fixed for the whole prompt) ----
  const SVGNS = "http://www.w3.org/2000/svg";
  function sv(tag, attrs) { const e = document.createElementNS(SVGNS, tag); for (const k in attrs) e.setAttribute(k, attrs[k]); return e; }
  function groupOf(name) { return D.groups.find((g) => g.name === name); }
  function ruleGroup(m) { return m.var ? D.edge_vars.find((e) => e.name === m.var).group : m.key; }
  function xy(pop, i) { const k = posMap[pop] ? posMap[pop].get(i) : undefined; return k === undefined ? null : D.layout[pop][k]; }
  function buildEncoding() {
    const box = $("encoding"); box.innerHTML = "";
    if (!D.encoding || !D.ids) return;
    box.appendChild(el("b", {}, "Prompt as the model reads it: "));
    D.ids.forEach((b, t) => box.appendChild(el("code", { class: "enc", id: "enc-" + t, "data-byte": b,
      title: "token " + (t + 1) + ": byte " + b }, D.labels[t] + " = 0x" + b.toString(16).padStart(2, "0"))));
    box.appendChild(el("div", { class: "legend", id: "encoding-how" }, "Encoded as " + D.encoding.how + "."));
  }
  function buildGraph() {
    const box = $("graph"); box.innerHTML = ""; posMap = {};
    if (!D.layout || !D.shown) return;
    for (const p in D.shown) posMap[p] = new Map(D.shown[p].map((i, k) => [i, k]));
    const svg = sv("svg", { id: "graph-svg", viewBox: "0 0 1000 640", role: "img" });
    const bands = [[12, "hub nodes (top to bottom: " + D.populations.filter((p) => p.name !== "neurons" && p.name !== "out").map((p) => p.name).join(", ") + ")"],
      [158, "neurons, grouped by their wiring G_x (communities side by side)"], [563, "output nodes: one per byte"]];
    if (!D.populations.some((p) => p.name !== "neurons" && p.name !== "out")) { bands.shift(); svg.setAttribute("viewBox", "0 145 1000 495"); }
    bands.forEach(([y, t]) => { const e = sv("text", { x: 4, y: y, class: "band" }); e.textContent = t; svg.appendChild(e); });
    const defs = sv("defs", {});
    ["E", "I", "S"].forEach((k) => { const m = sv("marker", { id: "arrow-" + k, viewBox: "0 0 6 6", refX: 6, refY: 3, markerWidth: 5, markerHeight: 5, orient: "auto" });
      m.appendChild(sv("path", { d: "M0,0 L6,3 L0,6 z", class: "arrow-" + k })); defs.appendChild(m); });
    svg.appendChild(defs);
    const gs = sv("g", { id: "sigma-layer" }), ge = sv("g", { id: "edge-layer" }), gn = sv("g", { id: "node-layer" });
    for (const v in D.sig_edges || {}) {
      const g = groupOf(D.edge_vars.find((e) => e.name === v).group);
      for (const [k, eid, pre, post] of D.sig_edges[v]) {
        const a = xy(g.pre, pre), b = xy(g.post, post);
        if (!a || !b) continue;
        const ln = sv("line", { id: "s-" + v + "-" + eid, class: "sig", x1: a[0], y1: a[1], x2: b[0], y2: b[1],
          "data-var": v, "data-k": k, "data-e": eid, "data-pre": pre, "data-post": post, "data-group": g.name });
        ln.onclick = () => selectEdge({ sigma: true, v: v, k: k, eid: eid, pre: pre, post: post, group: g.name });
        gs.appendChild(ln);
      }
    }
    for (const p in D.shown) {
      const r = p === "neurons" ? 5 : p === "out" ? 2.6 : 3.5;
      D.shown[p].forEach((i, k) => {
        const [x, y] = D.layout[p][k];
        const c = sv("circle", { id: "n-" + p + "-" + i, cx: x, cy: y, r: r, class: "node", "data-pop": p, "data-i": i });
        c.appendChild(sv("title", {}));
        c.onclick = () => select(p, i);
        gn.appendChild(c);
      });
    }
    svg.appendChild(gs); svg.appendChild(ge); svg.appendChild(gn); svg.appendChild(sv("g", { id: "out-labels" }));
    box.appendChild(svg);
  }
  function sigmaToken(v, fr) { // which token's sigma the page shows at frame fr: this token's once its write has run
    if (!fr) return -1;
    const wr = D.rounds.findIndex((r) => r.comm.some((m) => m.kind === "hebbian" && m.dst === v));
    return fr.k >= 0 && wr >= 0 && fr.k >= wr ? fr.t : fr.t - 1;
  }
  function renderGraph(fr) {
    if (!$("graph-svg")) return;
    const g = frameForDisplay();
    for (const p of D.populations) { // nodes coloured by the variable the population's grid shows
      if (!D.shown[p.name]) continue;
      const v = popVar[p.name], vals = values(v, g);
      let s = 0; for (const x of vals) s = Math.max(s, Math.abs(x));
      D.shown[p.name].forEach((i, k) => {
        const c = $("n-" + p.name + "-" + i);
        c.style.fill = colour(vals[k], s);
        const lab = p.name === "out" ? " (byte " + glyph(i) + ")" : "";
        c.firstChild.textContent = label(p.name, i) + lab + ": " + v + " = " + fmt(vals[k]);
      });
    }
    const ol = $("out-labels"); ol.innerHTML = ""; // the predicted bytes, as characters, at their output nodes
    const td = tokensDone(cur) - 1;
    if (td >= 0 && posMap.out) D.frames[tokenEnds[td]].end.top.forEach(([b, , p], k) => {
      const at = xy("out", b); if (!at) return;
      const tx = sv("text", { x: at[0], y: at[1] - 6 - 9 * k, class: "outlab", id: "outlab-" + b, "data-byte": b, "data-prob": p });
      tx.textContent = glyph(b) + " " + (100 * p).toFixed(1) + "%"; ol.appendChild(tx);
    });
    for (const v in D.sig_edges || {}) { // the sigma layer: width follows |sigma| after the token shown
      const t = sigmaToken(v, fr), series = sigSeries[v] || [];
      let m = 0; for (const [k] of D.sig_edges[v]) m = Math.max(m, Math.abs(((series[k] || [])[t]) || 0));
      for (const [k, eid] of D.sig_edges[v]) {
        const ln = $("s-" + v + "-" + eid); if (!ln) continue;
        const val = t >= 0 ? ((series[k] || [])[t] || 0) : 0;
        ln.dataset.value = val;
        ln.style.display = val ? "" : "none";
        ln.style.strokeWidth = m ? 0.4 + 4 * Math.abs(val) / m : 0;
      }
    }
    document.querySelectorAll("#sigma-layer line.glow").forEach((x) => x.classList.remove("glow"));
    if (glowKind === "memory" && D.fact) for (const v in D.fact.edges) D.fact.edges[v].forEach((eid) => {
      const s = $("s-" + v + "-" + eid); if (s) { s.classList.add("glow"); s.style.display = ""; s.style.strokeWidth = Math.max(2, parseFloat(s.style.strokeWidth) || 0); }
    });
    const ge = $("edge-layer"); ge.innerHTML = "";
    const more = $("edge-more"); more.innerHTML = "";
    if (!fr || fr.ph !== 0 || !fr.ed) { more.textContent = fr && fr.ph === 1 ? "computation sub-round: no messages; each node updates from its own variables" : ""; return; }
    const r = D.rounds[fr.k];
    let mx = 0; for (const d of fr.ed) mx = Math.max(mx, Math.abs(d[5]));
    for (const [j, eid, pre, post, w, msg, sig] of fr.ed) {
      const m = r.comm[j], gname = ruleGroup(m), gr = groupOf(gname), a = xy(gr.pre, pre), b = xy(gr.post, post);
      if (!a || !b) continue;
      const kind = m.kind === "send" ? (m.sign || "E") : "S";
      const cls = "msg " + (m.kind === "send" ? (m.sign === "I" ? "inh" : "exc") : m.kind === "read" ? "rd" : "hb") + (glowKind === m.kind ? " glow" : "");
      const ln = sv("line", { id: "e-" + gname + "-" + eid, class: cls, x1: a[0], y1: a[1], x2: b[0], y2: b[1], "marker-end": "url(#arrow-" + kind + ")",
        "data-rule": j, "data-group": gname, "data-e": eid, "data-pre": pre, "data-post": post, "data-w": w, "data-msg": msg, "data-sigma": sig === null ? "" : sig });
      ln.style.strokeWidth = 0.8 + 3 * Math.abs(msg) / (mx || 1);
      const tt = sv("title", {}); tt.textContent = label(gr.pre, pre) + " → " + label(gr.post, post) + " [" + gname + "]: message " + fmt(msg);
      ln.appendChild(tt);
      ln.onclick = () => selectEdge({ j: j, eid: eid, pre: pre, post: post, w: w, msg: msg, sig: sig, group: gname, rule: m });
      ge.appendChild(ln);
      const dot = sv("circle", { r: 2.2, class: "pulse " + cls });
      dot.appendChild(sv("animateMotion", { dur: "1.2s", repeatCount: "1", fill: "freeze", path: "M" + a[0] + "," + a[1] + " L" + b[0] + "," + b[1] }));
      ge.appendChild(dot);
      if (glowKind === "read" && sig !== null) { const s = $("s-" + m.var + "-" + eid); if (s) s.classList.add("glow"); }
      if (glowKind === "memory" && m.var && D.fact && (D.fact.edges[m.var] || []).indexOf(eid) >= 0) ln.classList.add("glow");
    }
    r.comm.forEach((m, j) => {
      const n = fr.ed.filter((d) => d[0] === j).length, rest = (fr.more || {})[j] || 0;
      more.appendChild(el("div", { class: "more", id: "more-" + j, "data-drawn": n, "data-more": rest },
        m.text + ": " + n + " strongest message" + (n === 1 ? "" : "s") + " drawn, +" + rest + " weaker"));
    });
  }
  function selectEdge(e) {
    document.querySelectorAll("#graph-svg .picked").forEach((x) => x.classList.remove("picked"));
    const ln = $((e.sigma ? "s-" + e.v : "e-" + e.group) + "-" + e.eid); if (ln) ln.classList.add("picked");
    selEdge = e; selected = null; onDemand = null; renderDetail();
  }
  function renderEdge(box) {
    const e = selEdge, g = groupOf(e.group), fr = cur >= 0 ? D.frames[cur] : null;
    box.appendChild(el("h2", { id: "detail-title" }, "synapse " + label(g.pre, e.pre) + " → " + label(g.post, e.post)));
    const sgn = g.sign === "E" ? "excitatory" : g.sign === "I" ? "inhibitory" : "";
    box.appendChild(el("p", { class: "legend" }, "group " + e.group + (sgn ? " (" + sgn + ")" : "") + ", edge " + e.eid + " of " + g.nnz));
    const tab = el("table", { class: "vals", id: "edge-values" });
    const row = (id, k, v, help) => { const tr = el("tr", { id: id, "data-value": v, title: help }); tr.appendChild(el("td", {}, k)); tr.appendChild(el("td", {}, fmt(v))); tab.appendChild(tr); };
    if (e.sigma) {
      const t = sigmaToken(e.v, fr), val = t >= 0 ? (((sigSeries[e.v] || [])[e.k] || [])[t] || 0) : 0;
      row("edge-sigma", sigmaName(e.v) + " after token " + (t + 1), val, "the synaptic state the simulator holds on this synapse");
    } else {
      row("edge-w", "weight " + e.group + "(i,j)", e.w, "the fixed synapse weight (a parameter of the model)");
      if (e.sig !== null) row("edge-sigma", sigmaName(e.rule.var) + " before this sub-round", e.sig, "the synaptic state on this synapse");
      row("edge-msg", "message this sub-round", e.msg, e.rule.text);
      box.appendChild(el("p", {}, "rule: " + e.rule.text + " — " + ruleHelp(e.rule)));
    }
    box.appendChild(tab);
    [["from", g.pre, e.pre], ["to", g.post, e.post]].forEach(([w, p, i]) => {
      const b = el("button", { class: "link" }, w + " " + label(p, i)); b.onclick = () => select(p, i); box.appendChild(b);
    });
  }

  // ---- each step explained with its own numbers ----------------------------------------------------------
  const KIND_HELP = {
    send: "communication: each source node i sends its value times the synapse weight G(i,j); node j adds up what arrives",
    read: "communication: the state read, A(j) += σ(i,j) X(i) over the synapses i → j (the attention read of the tensor model)",
    hebbian: "communication: the Hebbian write, σ(i,j) += Gs(i,j) X(i) Y(j) on each synapse whose two ends are active",
    reset: "computation: ↓ sets the variable back to 0",
    threshold: "computation (integrate-and-fire): r += (p − n)^+, the node fires only if excitation p beats inhibition n",
    gate: "computation: r += (p − n)^+ · g, fired only where the gate g is active",
    product: "computation: r += p · g",
    damp: "computation: damping, σ ← σ·U (each synapse keeps the fraction u of its state; ↓1-u reads 'decays by 1 − u')",
    linear: "computation: a signed sum of the node's own variables",
    normalize: "computation: LayerNorm's last step at this node, c / sqrt(s + eps)",
  };
  function ruleHelp(m) { return KIND_HELP[m.kind] || m.kind; }
  function roundHelp(lab) {
    return /^4l/.test(lab) ? "the paper's round number in Table 1(b): in layer l (1..L) the paper numbers its rounds 4l, 4l+1, 4l+2, 4l+3; " +
      "our layer starts with 4l+3 (Y to X), which computes x_{t,l} from the previous layer's y" : "a round of this compile: one communication then one computation sub-round";
  }
  function srcValue(v, k, rules, j, f, pos) { // value of v as rule j of a computation sub-round reads it
    for (let q = j - 1; q >= 0; q--) if (rules[q].dst === v) return rules[q].kind === "reset" ? 0 : values(v, f)[pos];
    return values(v, f - 1)[pos];
  }
  function tensorValue(v, t, l, i, pos) {
    if (!D.tensor) return null;
    if (v === D.logits) return D.tensor.logits[t][i];
    const q = v === "X" ? D.tensor.x : v === "Y" ? D.tensor.y : null;
    if (!q) return null;
    const [ps, vs] = q[t][l], k = ps.indexOf(pos);
    return k < 0 ? 0 : vs[k];
  }
  function arithmetic(m, rules, j, f, pos) { // [words, equation, arithmetic, computed value] of one rule at one node
    const val = (v) => srcValue(v, 0, rules, j, f, pos);
    const r0 = val(m.dst), s = m.src;
    if (m.kind === "threshold") { const p = val(s[0]), n = val(s[1]), c = r0 + Math.max(p - n, 0);
      return [m.dst + " = " + m.dst + " + (" + s[0] + " − " + s[1] + ")^+", fmt(r0) + " + (" + fmt(p) + " − " + fmt(n) + ")^+ = " + fmt(c), c]; }
    if (m.kind === "gate") { const p = val(s[0]), n = val(s[1]), g = val(s[2]), c = r0 + Math.max(p - n, 0) * g;
      return [m.dst + " = " + m.dst + " + (" + s[0] + " − " + s[1] + ")^+ · " + s[2], fmt(r0) + " + (" + fmt(p) + " − " + fmt(n) + ")^+ · " + fmt(g) + " = " + fmt(c), c]; }
    if (m.kind === "product") { const p = val(s[0]), g = val(s[1]), c = r0 + p * g;
      return [m.dst + " = " + m.dst + " + " + s[0] + " · " + s[1], fmt(r0) + " + " + fmt(p) + " · " + fmt(g) + " = " + fmt(c), c]; }
    if (m.kind === "linear") {
      const terms = m.text.split("=>")[0].trim().split(/\s+(?=[+-]\s)/).map((x) => x.trim());
      let c = 0; const parts = terms.map((x, q) => { const neg = x[0] === "-", v = x.replace(/^[+-]\s*/, ""), a = val(v); c += neg ? -a : a;
        return (q ? (neg ? " − " : " + ") : (neg ? "−" : "")) + fmt(a); });
      return [m.text.replace("=>", "="), parts.join("") + " = " + fmt(c), c];
    }
    if (m.kind === "normalize") { const a = val(s[0]), b = val(s[1]);
      return [m.text.replace("=>", "="), fmt(a) + " / sqrt(" + fmt(b) + " + eps) = " + fmt(values(m.dst, f)[pos]), values(m.dst, f)[pos]]; }
    if (m.kind === "reset") return [m.dst + " = 0", fmt(r0) + " → 0", 0];
    return null;
  }
  function renderArithmetic(box, pop, i, pos) {
    const fr = cur >= 0 ? D.frames[cur] : null;
    const wrap = el("div", { id: "arith" });
    if (!fr || fr.k < 0) { wrap.appendChild(el("p", { class: "hint" }, "Step to a computation sub-round to see this node's arithmetic.")); box.appendChild(wrap); return; }
    const r = D.rounds[fr.k], popVars = D.populations.find((p) => p.name === pop).variables;
    if (fr.ph === 0) {
      const inc = (fr.ed || []).filter((d) => d[3] === i && groupOf(ruleGroup(r.comm[d[0]])).post === pop);
      wrap.appendChild(el("h3", {}, "this communication sub-round, at " + label(pop, i)));
      if (!inc.length) wrap.appendChild(el("p", { class: "hint" }, "no drawn message arrives here in this sub-round"));
      inc.forEach((d) => { const m = r.comm[d[0]];
        wrap.appendChild(el("p", { class: "eq" }, m.dst + " += " + fmt(d[5]) + " from " + label(groupOf(ruleGroup(m)).pre, d[2]) + " (" + m.text + ")")); });
      box.appendChild(wrap); return;
    }
    const rules = r.comp, here = rules.map((m, j) => [m, j]).filter(([m]) => popVars.indexOf(m.dst) >= 0 && m.kind !== "damp");
    wrap.appendChild(el("h3", {}, "the arithmetic at " + label(pop, i) + ", this computation sub-round"));
    const t = fr.t, l = r.layer;
    here.forEach(([m, j]) => {
      const a = arithmetic(m, rules, j, cur, pos); if (!a) return;
      const later = rules.slice(j + 1).some((q) => q.dst === m.dst);
      const sim = later ? a[2] : values(m.dst, cur)[pos], ten = later ? null : tensorValue(m.dst, t, l, i, pos);
      const div = el("div", { class: "arith-rule", "data-var": m.dst, "data-kind": m.kind, "data-calc": a[2], "data-sim": sim, "data-tensor": ten === null ? "" : ten });
      div.appendChild(el("div", { class: "words" }, ruleHelp(m)));
      div.appendChild(el("div", { class: "eq" }, a[0]));
      div.appendChild(el("div", { class: "eq nums" }, a[1]));
      const what = m.dst === "X" ? "x_{t,l}" : m.dst === "Y" ? "y_{t,l}" : m.dst === D.logits ? "logit" : "";
      div.appendChild(el("div", { class: "cmp" }, "graph simulator: " + fmt(sim) + (ten === null ? "" : " · tensor model " + what + " (token " + (t + 1) + ", " + layerName(l) + "): " + fmt(ten))));
      wrap.appendChild(div);
    });
    if (!here.length) {
      const where = [...new Set(rules.filter((m) => m.kind !== "damp").map((m) => popOf(m.dst) || "σ"))].join(", ") || "no node";
      wrap.appendChild(el("p", { class: "hint" }, "this sub-round's rules update " + where + ", not " + label(pop, i) +
        "; step to a round whose rules write its variables (e.g. I&F for X)"));
    }
    box.appendChild(wrap);
  }

  // ---- legend and the guided tour ------------------------------------------------------------------------
  function buildGlossary() { // bdh.teach.words: the notation, and where docs/tutorial.md defines each term
    const box = $("glossary"); if (!box || !D.glossary || box.dataset.built) return; box.dataset.built = "1";
    box.appendChild(el("summary", {}, "Glossary: every symbol on this page"));
    const dl = el("dl", { class: "notation" });
    D.glossary.notation.forEach(([k, v]) => { dl.appendChild(el("dt", {}, k)); dl.appendChild(el("dd", {}, v)); });
    box.appendChild(dl);
    box.appendChild(el("p", { class: "legend" }, "Defined in " + D.glossary.tutorial + " (section 2), anchors: " +
      Object.entries(D.glossary.anchors).map(([k, a]) => k + " #" + a).join(" · ")));
  }
  function buildLegend() {
    buildGlossary();
    const box = $("legend"); if (!box || box.dataset.built) return; box.dataset.built = "1";
    [["E", "excitatory message (green, solid): adds to Xe, Ye, Pe"], ["I", "inhibitory message (red, dashed): adds to Xi, Yi, Pi"],
     ["S", "σ, the synaptic state (orange; width follows |σ|)"], ["", "↓ reset to 0 · ↓1-u damp σ ← σ·u · (p − n)^+ = max(p − n, 0) · (i), (i,j) a node, a synapse i → j · [G] the synapse group carrying a message · I&F integrate-and-fire · LN LayerNorm (official compile) · l = 1..L the layer · X, Y the paper's x, y; Xe/Xi, Ye/Yi their excitatory and inhibitory inputs; A what was read from σ"]]
      .forEach(([k, t]) => box.appendChild(el("span", { class: "key key-" + (k || "txt") }, t)));
  }
  function tourGo(k) { // the guided tour: one token through the rounds (steps from ViewSession.tour)
    const T = D.tour || [], box = $("tour");
    if (k < 0 || k >= T.length || !T.length) { tourAt = -1; box.hidden = true; glowKind = null; render(); return; }
    tourAt = k; const s = T[k];
    glowKind = s.glow; go(s.frame, true);
    const gb = $("graph-box"); if (gb && gb.scrollIntoView) gb.scrollIntoView({ block: "start" });
    if (s.pick) {
      const vals = values(s.pick, cur); let best = 0;
      vals.forEach((v, q) => { if (v > vals[best]) best = q; });
      select("neurons", D.shown.neurons[best]);
    }
    box.hidden = false; box.dataset.step = k; box.dataset.last = k === T.length - 1 ? "1" : "0"; box.dataset.key = s.key;
    $("tour-title").textContent = s.title + " (" + (k + 1) + "/" + T.length + ")";
    $("tour-text").textContent = s.text;
    $("tour-next").disabled = k === T.length - 1; $("tour-prev").disabled = k === 0;
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
  function go(i, keepGlow) {
    showError(""); if (!keepGlow) glowKind = null;
    if (selEdge && !selEdge.sigma) selEdge = null;
    cur = Math.max(-1, Math.min(i, (D.frames || []).length - 1)); render();
  }
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
  $("tour-start").onclick = () => tourGo(0);
  $("tour-next").onclick = () => tourGo(tourAt + 1);
  $("tour-prev").onclick = () => tourGo(tourAt - 1);
  $("tour-end").onclick = () => tourGo(-1);
  index(); build();
  if (D.frames && D.frames.length) go(0); else render();
  window.bdhView = { data: () => D, cursor: () => cur, go: go, select: select };
})();
