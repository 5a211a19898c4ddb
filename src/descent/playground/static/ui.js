// The page's controls and panels, built from the catalog the backend describes.
"use strict";

const DECAYS = new Set(["momentum", "betas", "beta", "rho", "alpha"]);

// A slider position in [0, 1000] ↔ a setting's value. Learning rate and ε on a log
// scale; decay rates on a log scale of 1 − β, so 0.9, 0.99 and 0.999 are equally far
// apart; a static export's precomputed values as an index.
function scaleFor(name, spec, choices) {
  if (choices) {
    return {
      max: choices.length - 1,
      pos: (x) => nearest(choices, x),
      val: (p) => choices[Math.round(p)],
    };
  }
  if (DECAYS.has(name)) {
    const top = spec.open_hi ? 0.9999 : 0.9999;
    const lo = Math.log10(1 - top);
    return {
      max: 1000,
      pos: (x) => Math.round((1000 * Math.log10(Math.max(1 - x, 1 - top))) / lo),
      val: (p) => +(1 - Math.pow(10, (p / 1000) * lo)).toPrecision(4),
    };
  }
  if (spec.log) {
    const a = Math.log10(spec.lo), b = Math.log10(spec.hi), z = spec.zero ? 20 : 0;
    return {
      max: 1000 + z,
      pos: (x) => (x <= 0 ? 0 : z + Math.round((1000 * (Math.log10(x) - a)) / (b - a))),
      val: (p) => (p < z ? 0 : +Math.pow(10, a + ((p - z) / 1000) * (b - a)).toPrecision(3)),
    };
  }
  return { max: 1000, pos: (x) => Math.round((1000 * (x - spec.lo)) / (spec.hi - spec.lo)), val: (p) => spec.lo + (p / 1000) * (spec.hi - spec.lo) };
}

function nearest(values, x) {
  let best = 0;
  values.forEach((v, i) => {
    const d = (a) => (Array.isArray(a) ? a.reduce((s, c, j) => s + Math.abs(c - x[j]), 0) : Math.abs(Math.log(a || 1e-30) - Math.log(x || 1e-30)));
    if (d(v) < d(values[best])) best = i;
  });
  return best;
}

const UI = {
  build(app) {
    const sel = $("#surface");
    for (const s of app.catalog.surfaces) sel.append(el("option", { value: s.key }, s.title));
    sel.value = app.state.surface;
    sel.addEventListener("change", () => app.setScene({ surface: sel.value, start: null, steps: null }, true));
    const live = !app.backend.static;
    this.range("#kappa", (p) => Math.pow(10, p / 250), (x) => Math.round(250 * Math.log10(x)), app.state.kappa,
      (x) => app.setScene({ kappa: +x.toPrecision(3) }, true), (x) => `κ = ${fmt(+x.toPrecision(3))}`);
    this.range("#angle", (p) => p, (x) => x, app.state.angle, (x) => app.setScene({ angle: x }, true), (x) => `turned ${x}°`);
    this.range("#noise", (p) => p / 100, (x) => Math.round(x * 100), 0, (x) => app.setScene({ noise: x }), (x) => `σ = ${fmt(x)}`);
    this.range("#steps", (p) => p, (x) => x, 300, (x) => app.setScene({ steps: x }), (x) => `${x} steps`);
    for (const id of ["#noise-row", "#steps-row"]) $(id).hidden = !live;
    $("#reset-start").addEventListener("click", () => app.setScene({ start: null }));
    const add = $("#add");
    add.append(el("option", { value: "" }, "+ add an optimizer…"));
    for (const o of app.catalog.optimizers) add.append(el("option", { value: o.key }, `${o.label} — ${o.note || o.class}`));
    add.addEventListener("change", () => { if (add.value) app.addRun(add.value); add.value = ""; });
    $("#tune-all").addEventListener("click", () => app.tuneAll());
    $("#play").addEventListener("click", () => app.play(!app.state.playing));
    $("#back").addEventListener("click", () => { app.play(false); app.setFrame(app.state.frame - 1); });
    $("#fwd").addEventListener("click", () => { app.play(false); app.setFrame(app.state.frame + 1); });
    $("#first").addEventListener("click", () => { app.play(false); app.setFrame(0); });
    $("#last").addEventListener("click", () => { app.play(false); app.setFrame(app.result ? app.result.steps : 0); });
    $("#scrub").addEventListener("input", (e) => { app.play(false); app.setFrame(+e.target.value); });
    $("#speed").addEventListener("change", (e) => { app.state.speed = +e.target.value; });
    $("#stepmode").addEventListener("change", (e) => {
      app.state.stepMode = e.target.checked;
      if (e.target.checked) { app.play(false); if (app.result && app.state.frame >= app.result.steps) app.setFrame(0); }
      document.body.classList.toggle("stepping", e.target.checked);
      app.render();
    });
    $("#contour").addEventListener("click", (e) => {
      if (!app.view || app.backend.static) return;
      const r = e.target.getBoundingClientRect();
      const x = app.view.wx(e.clientX - r.left), y = app.view.wy(e.clientY - r.top);
      app.touched = false;
      app.setScene({ start: [+x.toPrecision(4), +y.toPrecision(4)] });
    });
    document.addEventListener("keydown", (e) => {
      if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
      if (e.key === " ") { e.preventDefault(); app.play(!app.state.playing); }
      if (e.key === "ArrowRight") app.setFrame(app.state.frame + 1);
      if (e.key === "ArrowLeft") app.setFrame(app.state.frame - 1);
    });
    if (app.catalog.description) $("#about-data").innerHTML = app.catalog.description;
  },

  range(id, val, pos, initial, onchange, label) {
    const input = $(id), out = $(id + "-out");
    input.value = pos(initial);
    out.textContent = label(initial);
    input.addEventListener("input", () => { out.textContent = label(val(+input.value)); });
    input.addEventListener("change", () => onchange(val(+input.value)));
  },

  surfaceInfo(app) {
    const s = app.surfaceData;
    $("#formula").textContent = `f(x, y) = ${s.formula}`;
    $("#quadratic-rows").hidden = s.key !== "quadratic" || app.backend.static;
    if (!app.state.steps) { $("#steps").value = s.steps; $("#steps-out").textContent = `${s.steps} steps`; }
    $("#start-note").textContent = app.backend.static
      ? "Start points are fixed in this export."
      : "Click the plot to move the start point.";
  },

  dash(app, i) {
    const id = app.result && app.result.ids ? app.result.ids[i] : null;
    const run = app.state.runs.find((r) => r.id === id);
    return run && run.copy ? [[7, 4], [2, 3], [10, 3, 2, 3]][(run.copy - 1) % 3] : [];
  },

  cards(app) {
    const box = $("#cards");
    box.replaceChildren();
    for (const run of app.state.runs) box.append(this.card(app, run));
  },

  card(app, run) {
    const o = app.byKey[run.key];
    const head = el("div", { class: "card-head" },
      el("span", { class: "swatch", style: `background:${o.color}` }),
      el("strong", {}, o.label + (run.copy ? ` (${run.copy + 1})` : "")),
      el("span", { class: "muted" }, ` ${o.class}`),
      el("span", { class: "spacer" }),
      el("button", { type: "button", title: "load the landscapes' tuned setting", onclick: () => app.tune(run) }, "tuned"),
      el("button", { type: "button", title: "this optimizer's defaults", onclick: () => { run.settings = structuredClone(o.settings); UI.cards(app); app.refresh(); } }, "defaults"),
      el("button", { type: "button", title: "race another copy of it", onclick: () => app.addRun(run.key, true, run.settings) }, "copy"),
      el("button", { type: "button", class: "remove", title: "remove", "aria-label": `remove ${o.label}`, onclick: () => app.removeRun(run.id) }, "✕"));
    const body = el("div", { class: "card-body" });
    for (const name of Object.keys(o.settings)) {
      const value = run.settings[name];
      if (Array.isArray(value)) value.forEach((_, i) => body.append(this.slider(app, run, name, i)));
      else body.append(this.slider(app, run, name, null));
    }
    const card = el("div", { class: "card", "data-run": run.id, "data-key": run.key }, head, body,
      el("div", { class: "card-note muted" }, run.note || ""), el("div", { class: "card-status" }));
    card.style.borderLeftColor = o.color;
    return card;
  },

  slider(app, run, name, index) {
    const spec = app.catalog.sliders[name];
    const choices = app.backend.choices ? app.backend.choices(app.scene(), run.key, name, index) : null;
    const sc = scaleFor(name, spec, choices);
    const get = () => (index === null ? run.settings[name] : run.settings[name][index]);
    const set = (x) => { if (index === null) run.settings[name] = x; else run.settings[name][index] = x; };
    const symbol = index === null ? spec.symbol : spec.symbol + "₁₂"[index];
    const range = el("input", { type: "range", min: 0, max: sc.max, step: 1, value: sc.pos(get()), "data-name": name, "data-index": index ?? "", "aria-label": `${symbol} ${spec.name}` });
    const num = el("input", { type: "text", class: "num", value: fmtIn(get()), "aria-label": `${symbol} value`, readonly: choices ? true : null });
    range.addEventListener("input", () => { set(sc.val(+range.value)); num.value = fmtIn(get()); app.refresh(); });
    num.addEventListener("change", () => {
      const x = Number(num.value.replace("−", "-"));
      set(num.value.trim() === "" || Number.isNaN(x) ? num.value : x);
      range.value = sc.pos(get());
      app.refresh();
    });
    return el("label", { class: "setting" }, el("span", { class: "sym", title: spec.name }, symbol), range, num);
  },

  cardNote(run, text) {
    run.note = text;
    const n = $(`.card[data-run="${run.id}"] .card-note`);
    if (n) n.textContent = text;
  },

  status(app) {
    const res = app.result;
    res.runs.forEach((r, i) => {
      const card = $(`.card[data-run="${res.ids[i]}"] .card-status`);
      if (!card) return;
      let text = "";
      if (r.diverged) text = `diverged: left the picture or overflowed at step ${r.stopped_at}`;
      else if (r.reached_at !== null) text = res.surface.escape !== null ? `escaped the saddle at step ${r.reached_at}` : `reached the minimum at step ${r.reached_at}`;
      else text = `loss after ${res.steps} steps: ${fmt(lastValue(r.loss))}`;
      card.textContent = text;
      card.classList.toggle("bad", r.diverged);
    });
    $("#timing").textContent = res.elapsed_ms !== undefined ? `computed in ${Math.round(res.elapsed_ms)} ms` : "precomputed";
  },

  transport(app) {
    const res = app.result, k = app.state.frame;
    const scrub = $("#scrub");
    scrub.max = res ? res.steps : 0;
    scrub.value = k;
    $("#frame").textContent = res ? `step ${k} / ${res.steps}` : "";
    $("#play").textContent = app.state.playing ? "❚❚" : "▶";
    $("#play").setAttribute("aria-label", app.state.playing ? "pause" : "play");
  },

  busy(on) { document.body.classList.toggle("busy", on); },

  error(msg) {
    const box = $("#error");
    box.hidden = !msg;
    box.textContent = msg || "";
  },

  losses(app) {
    const res = app.result;
    if (!res) return;
    const runs = res.runs.map((r, i) => ({ ...r, dash: this.dash(app, i) }));
    const envelopes = [];
    if (res.theory) {
      res.theory.runs.forEach((t, i) => {
        const f0 = res.runs[i].loss[0];
        if (t.predicted && f0 > 0) envelopes.push({ color: res.runs[i].color, at: (k) => f0 * Math.pow(t.predicted, 2 * k) });
      });
    }
    Draw.losses($("#losses"), runs, app.state.frame, res.steps, { envelopes });
  },

  theory(app) {
    const box = $("#theory"), res = app.result;
    box.hidden = !(res && res.theory);
    if (box.hidden) return;
    const th = res.theory;
    const rows = th.methods.map((m) => el("tr", {},
      el("td", {}, m.label), el("td", {}, fmt(m.lr)), el("td", {}, m.method === "gd" ? "—" : fmt(m.momentum)), el("td", {}, fmt(m.rate)),
      el("td", {}, el("button", { type: "button", onclick: () => UI.useMethod(app, m) }, "race it"))));
    const runs = res.runs.map((r, i) => el("tr", {},
      el("td", {}, el("span", { class: "swatch", style: `background:${r.color}` }), r.label),
      el("td", {}, th.runs[i].predicted === null ? "—" : fmt(th.runs[i].predicted)),
      el("td", { "data-measured": i }, th.runs[i].measured === null ? "—" : fmt(th.runs[i].measured))));
    box.replaceChildren(
      el("h3", {}, "Theory on this quadratic"),
      el("p", { class: "muted" }, `Hessian eigenvalues μ = ${fmt(th.curvatures[0])}, L = ${fmt(th.curvatures[1])} (κ = ${fmt(th.kappa)}). Rates are per step of ‖θ − θ*‖; the optimal (α, β) and rates are from descent.landscapes.theory (Lessard, Recht & Packard 2016).`),
      el("table", {}, el("tr", {}, ...["method", "α*", "β*", "rate ρ*", ""].map((h) => el("th", {}, h))), ...rows),
      el("table", {}, el("tr", {}, ...["run", "ρ predicted at its (α, β)", "ρ measured"].map((h) => el("th", {}, h))), ...runs),
      el("p", { class: "muted" }, "Dashed lines on the loss plot: f₀·ρ²ᵏ for each run theory covers. Turning the bowl leaves these rates alone; per-coordinate methods (AdaGrad, RMSProp, Adam) feel the turn."));
  },

  useMethod(app, m) {
    const key = m.method === "gd" ? "sgd" : m.method === "heavy_ball" ? "momentum" : "nag";
    let run = app.state.runs.find((r) => r.key === key);
    if (!run) run = app.addRun(key, false);
    run.settings.lr = m.lr;
    if (m.method !== "gd") run.settings.momentum = m.momentum;
    UI.cards(app);
    app.refresh();
  },

  stepPanel(app) {
    const box = $("#steppanel"), res = app.result;
    box.hidden = !(res && app.state.stepMode);
    if (box.hidden) return;
    const k = app.state.frame;
    const items = res.runs.map((r, i) => this.stepCard(app, r, k, (app.arrowScales || [])[i]));
    box.replaceChildren(
      el("h3", {}, `Step ${k + 1}: from θ after ${k} steps to θ after ${k + 1}`),
      el("p", { class: "muted legend" }, "Drawn at each point: −g (black), the first moment −m or −b (colour), the second moment as a box of half-sides √v per coordinate (dashed), on one scale per optimizer (below); the thin dashed arrow is the step taken, to scale."),
      ...items);
  },

  stepCard(app, r, k, scale) {
    const o = app.byKey[r.key];
    const card = el("div", { class: "step-card" }, el("div", { class: "card-head" },
      el("span", { class: "swatch", style: `background:${r.color}` }), el("strong", {}, r.label),
      el("span", { class: "muted small" }, `  t = ${k + 1}` + (scale ? `, arrows ×${fmt(scale)}` : ""))));
    if (!r.xy[k]) {
      card.append(el("p", { class: "muted" }, "stopped before this step"));
      return card;
    }
    if (k >= r.xy.length - 1 || !r.xy[k + 1]) {
      card.append(el("p", { class: "muted" }, r.diverged && k + 1 === r.stopped_at ? "this step leaves the picture: diverged" : "no step after this one"));
      return card;
    }
    if (!o.formula) {
      card.append(el("p", { class: "muted" }, "no formula written for this optimizer yet"));
      return card;
    }
    for (const line of o.formula.lines) {
      card.append(el("div", { class: "formula" }, ...line.map((p) => (typeof p === "string" ? p : el("var", {}, p.sym)))));
      if (line.some((p) => typeof p !== "string"))
        card.append(el("div", { class: "numbers" }, ...line.map((p) => (typeof p === "string" ? p : el("span", { class: "val", title: p.sym }, fmt(value(r, p, k)))))));
    }
    if (o.formula.row) card.append(el("p", { class: "muted small" }, "The notes' form: docs/conventions.md, row ", el("code", {}, o.formula.row.replaceAll("`", ""))));
    return card;
  },
};

function value(r, p, k) {
  const j = p.when === "new" ? k + 1 : k;
  if (p.src === "param") return r.xy[j];
  if (p.src === "grad") return r.grad[k];
  if (p.src === "step") return k + 1;
  if (p.src === "state") return r.state[p.key] ? r.state[p.key][j] : null;
  if (p.src === "hyper") {
    const v = r.settings[p.name];
    return p.index !== undefined && Array.isArray(v) ? v[p.index] : v;
  }
  return null;
}

function lastValue(a) {
  for (let i = a.length - 1; i >= 0; i--) if (a[i] !== null) return a[i];
  return null;
}

function fmtIn(x) {
  return typeof x === "number" ? String(+x.toPrecision(6)) : String(x);
}

window.UI = UI;
