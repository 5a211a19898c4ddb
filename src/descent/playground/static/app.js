// The playground page: controls, the race, step mode. It asks the backend (the local
// server, or a static export's precomputed grid) for every number it shows.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) if (kid !== null && kid !== undefined) e.append(kid);
  return e;
};

function fmt(x) {
  if (x === null || x === undefined) return "—";
  if (typeof x === "boolean") return String(x);
  if (Array.isArray(x)) return "(" + x.map(fmt).join(", ") + ")";
  if (!Number.isFinite(x)) return String(x);
  if (x === 0) return "0";
  const a = Math.abs(x);
  if (a >= 1e4 || a < 1e-3) return x.toExponential(2).replace("e+", "e").replace("-", "−");
  return String(+x.toPrecision(4)).replace("-", "−");
}

const App = {
  catalog: null,
  backend: null,
  state: {
    surface: "beale", kappa: 20, angle: 0, noise: 0, seed: 0, steps: null, start: null,
    runs: [], frame: 0, playing: false, stepMode: false, speed: 1,
  },
  surfaceData: null,
  result: null,
  bg: null,
  pending: false,
  inflight: false,
  requests: 0,
  drawn: { arrows: 0, boxes: 0, paths: 0 },
  nextId: 1,

  async init(backend) {
    this.backend = backend;
    this.catalog = await backend.catalog();
    this.byKey = Object.fromEntries(this.catalog.optimizers.map((o) => [o.key, o]));
    const keys = this.catalog.surfaces.map((s) => s.key);
    if (!keys.includes(this.state.surface)) this.state.surface = keys[0];
    UI.build(this);
    for (const key of this.catalog.initial || ["sgd", "momentum", "adam", "rmsprop"]) this.addRun(key, false);
    await this.loadSurface();
    this.refresh();
    window.addEventListener("resize", () => { this.bg = null; this.render(); });
    // ?tune=0 opens with the default settings (tests, and anyone who wants them)
    if (new URLSearchParams(location.search).get("tune") !== "0") this.tuneAll();
  },

  scene() {
    const s = this.state, out = { surface: s.surface };
    if (s.surface === "quadratic") { out.kappa = s.kappa; out.angle = s.angle; }
    if (s.start) out.start = s.start;
    if (s.steps) out.steps = s.steps;
    if (s.noise) { out.noise = s.noise; out.seed = s.seed; }
    return out;
  },

  addRun(key, refresh = true, settings = null) {
    const o = this.byKey[key];
    const run = { id: this.nextId++, key, settings: structuredClone(settings || o.settings) };
    run.copy = this.state.runs.filter((r) => r.key === key).length;
    this.state.runs.push(run);
    UI.cards(this);
    if (refresh) this.refresh();
    return run;
  },

  removeRun(id) {
    this.state.runs = this.state.runs.filter((r) => r.id !== id);
    UI.cards(this);
    this.refresh();
  },

  async loadSurface() {
    try {
      this.surfaceData = await this.backend.surface(this.scene());
      this.bg = null;
      UI.surfaceInfo(this);
      UI.cards(this);
    } catch (err) { UI.error(err.message); }
  },

  // One race request in flight at a time; a change made meanwhile sends one more
  // request (with the newest settings) when it returns.
  async refresh() {
    if (this.inflight) { this.pending = true; return; }
    if (!this.state.runs.length) { this.result = null; this.render(); return; }
    this.inflight = true;
    UI.busy(true);
    try {
      const body = { ...this.scene(), optimizers: this.state.runs.map((r) => ({ key: r.key, ...r.settings })) };
      const res = await this.backend.race(body);
      this.requests++;
      this.result = res;
      this.result.ids = this.state.runs.map((r) => r.id);
      UI.error(null);
      if (this.state.frame > res.steps) this.state.frame = res.steps;
      if (!this.state.playing && !this.state.stepMode && !this.touched) this.state.frame = res.steps;
      UI.transport(this);
      UI.status(this);
    } catch (err) {
      UI.error(err.message);
    } finally {
      this.inflight = false;
      UI.busy(false);
    }
    this.render();
    if (this.pending) { this.pending = false; this.refresh(); }
  },

  async tune(run) {
    UI.cardNote(run, "tuning…");
    try {
      const t = await this.backend.tune({ ...this.scene(), key: run.key });
      Object.assign(run.settings, t.settings);
      UI.cards(this);
      UI.cardNote(run, `tuned over ${t.candidates} settings (${t.diverged} diverged)`);
      this.refresh();
    } catch (err) { UI.cardNote(run, ""); UI.error(err.message); }
  },

  async tuneAll() {
    for (const run of [...this.state.runs]) await this.tune(run);
  },

  setScene(change, reload = false) {
    Object.assign(this.state, change);
    // a tuned setting belongs to the scene it was tuned on
    for (const run of this.state.runs) run.note = "";
    if (reload && this.backend.static) this.loadSurface().then(() => this.tuneAll());
    else if (reload) this.loadSurface().then(() => this.refresh());
    else this.refresh();
  },

  setFrame(k) {
    if (!this.result) return;
    this.touched = true;
    this.state.frame = Math.max(0, Math.min(this.result.steps, k));
    UI.transport(this);
    this.render();
  },

  play(on) {
    this.state.playing = on;
    if (on && this.result && this.state.frame >= this.result.steps) this.state.frame = 0;
    UI.transport(this);
    if (on) this.tick();
  },

  tick() {
    if (!this.state.playing || !this.result) return;
    const per = Math.max(1, Math.round((this.result.steps / 240) * this.state.speed));
    this.state.frame = Math.min(this.result.steps, this.state.frame + per);
    UI.transport(this);
    this.render();
    if (this.state.frame >= this.result.steps) { this.play(false); return; }
    requestAnimationFrame(() => this.tick());
  },

  render() {
    Stage.draw(this);
    UI.losses(this);
    UI.theory(this);
    UI.stepPanel(this);
  },
};

// The contour plot with the paths, and in step mode the arrows.
const Stage = {
  draw(app) {
    const canvas = $("#contour"), s = app.surfaceData;
    if (!s) return;
    const wrap = canvas.parentElement;
    const [x0, x1, y0, y1] = s.window;
    let W = wrap.clientWidth, H = (W * (y1 - y0)) / (x1 - x0);
    const maxH = Math.max(320, window.innerHeight * 0.72);
    if (H > maxH) { H = maxH; W = (H * (x1 - x0)) / (y1 - y0); }
    W = Math.round(W); H = Math.round(H);
    const dpr = window.devicePixelRatio || 1;
    if (!app.bg || app.bg.w !== W || app.bg.h !== H || app.bg.key !== s) {
      app.bg = { canvas: Draw.background(s, W, H, dpr), w: W, h: H, key: s };
    }
    canvas.style.width = W + "px"; canvas.style.height = H + "px";
    canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);
    const ctx = canvas.getContext("2d");
    ctx.drawImage(app.bg.canvas, 0, 0);
    ctx.scale(dpr, dpr);
    const v = Draw.view(s.window, W, H);
    app.view = v;
    const start = app.result ? app.result.start : app.state.start || s.start;
    app.drawn = { arrows: 0, boxes: 0, paths: 0 };
    if (app.result) this.paths(app, ctx, v);
    for (const m of s.minima) Draw.star(ctx, v.x(m[0]), v.y(m[1]), 7);
    for (const m of s.saddles) Draw.cross(ctx, v.x(m[0]), v.y(m[1]), 5, "#ffffff", 2.5);
    ctx.fillStyle = "#fff"; ctx.strokeStyle = "#1d2330"; ctx.lineWidth = 1.5;
    ctx.beginPath(); ctx.arc(v.x(start[0]), v.y(start[1]), 5, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
    if (app.result && app.state.stepMode) this.arrows(app, ctx, v);
  },

  paths(app, ctx, v) {
    const k = app.state.frame;
    app.result.runs.forEach((r, i) => {
      const dash = UI.dash(app, i);
      Draw.path(ctx, v, r.xy, r.xy.length, r.color, { alpha: 0.28, width: 1.5, dash });
      Draw.path(ctx, v, r.xy, k, r.color, { width: 2.4, dash });
      app.drawn.paths++;
      const last = lastPoint(r.xy, k);
      if (!last) return;
      const [px, py] = [v.x(last[1][0]), v.y(last[1][1])];
      if (r.stopped_at !== null && k >= r.stopped_at) {
        Draw.cross(ctx, px, py, 6, r.color, 3);
      } else {
        ctx.fillStyle = r.color; ctx.strokeStyle = "#fff"; ctx.lineWidth = 1.5;
        ctx.beginPath(); ctx.arc(px, py, 5.5, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
      }
    });
  },

  // −g, −m (first moment) and the second moment's box √v share one scale per run,
  // printed in its step card: the largest of them is drawn 14 % of the window wide.
  // The step itself is drawn to true scale.
  arrows(app, ctx, v) {
    const k = app.state.frame, res = app.result;
    const [x0, x1] = app.surfaceData.window;
    app.arrowScales = res.runs.map((r, i) => {
      const p = Moments.at(app, r, k);
      if (!p) return null;
      let biggest = 0;
      for (const vec of [p.g, ...p.first.map((f) => f.value), ...p.second.map((s) => s.half)])
        if (vec) biggest = Math.max(biggest, Math.abs(vec[0]), Math.abs(vec[1]));
      const scale = biggest > 0 ? (0.14 * (x1 - x0)) / biggest : 1;
      this.moments(app, ctx, v, r, p, scale);
      return scale;
    });
  },

  moments(app, ctx, v, r, p, scale) {
    const px = v.x(p.xy[0]), py = v.y(p.xy[1]);
    const to = (vec) => [v.x(p.xy[0] + scale * vec[0]), v.y(p.xy[1] + scale * vec[1])];
    for (const sec of p.second) {
      const [hx, hy] = sec.half;
      ctx.save(); ctx.strokeStyle = r.color; ctx.lineWidth = 1.6; ctx.setLineDash(sec.dash);
      ctx.strokeRect(v.x(p.xy[0] - scale * hx), v.y(p.xy[1] + scale * hy), 2 * scale * hx * v.perUnit,
        2 * scale * hy * v.perUnit);
      ctx.restore();
      app.drawn.boxes++;
    }
    if (p.g && Draw.arrow(ctx, px, py, ...to(p.g.map((c) => -c)), "#1d2330", { width: 2, label: "−g" })) app.drawn.arrows++;
    for (const f of p.first)
      if (Draw.arrow(ctx, px, py, ...to(f.value.map((c) => -c)), r.color, { width: 3, label: "−" + f.symbol })) app.drawn.arrows++;
    if (p.next && Draw.arrow(ctx, px, py, v.x(p.next[0]), v.y(p.next[1]), r.color, { width: 1.5, dash: [4, 3] })) app.drawn.arrows++;
  },
};

function lastPoint(xy, k) {
  for (let j = Math.min(k, xy.length - 1); j >= 0; j--) if (xy[j]) return [j, xy[j]];
  return null;
}

// What a run's state holds at frame k, by the page's one table of state keys.
const Moments = {
  at(app, r, k) {
    const xy = r.xy[k];
    if (!xy) return null;
    const next = k + 1 < r.xy.length ? r.xy[k + 1] : null;
    const kk = Math.min(k + 1, r.xy.length - 1);
    const out = { xy, next, g: r.grad[k], first: [], second: [] };
    for (const [key, series] of Object.entries(r.state)) {
      const info = app.catalog.state[key], val = series[next ? kk : k];
      if (!info || !Array.isArray(val) || val.some((c) => c === null)) continue;
      if (info.role === "first") out.first.push({ symbol: info.symbol, value: val });
      if (info.role === "second") {
        const half = info.squared ? val.map((c) => Math.sqrt(Math.max(c, 0))) : val.map(Math.abs);
        out.second.push({ symbol: info.symbol, half, dash: key === "max_exp_avg_sq" ? [2, 3] : [6, 3] });
      }
    }
    return out;
  },
};

window.App = App;
