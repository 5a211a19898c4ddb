// Where the numbers come from: the local server's JSON endpoints, or, in a static
// export, the grid of settings precomputed by the same endpoints.
"use strict";

const LiveBackend = {
  static: false,
  async call(path, body) {
    const res = await fetch(path, body === undefined ? {} : {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    let data;
    try { data = await res.json(); } catch (_) { throw new Error(`${path}: HTTP ${res.status}`); }
    if (!res.ok) throw new Error(data.error || `${path}: HTTP ${res.status}`);
    return data;
  },
  catalog() { return this.call("/api/catalog"); },
  surface(scene) { return this.call("/api/surface", scene); },
  race(body) { return this.call("/api/race", body); },
  tune(body) { return this.call("/api/tune", body); },
};

// A static export: data/index.js sets PLAYGROUND_DATA (the catalog, the scenes and
// what was precomputed); data/<scene>.js adds one scene's runs when it is first shown.
const StaticBackend = {
  static: true,
  data: null,
  async catalog() {
    this.data = window.PLAYGROUND_DATA;
    const c = this.data.catalog;
    c.surfaces = this.data.scenes.map((s) => ({ ...s.surface, key: s.id, title: s.title }));
    c.description = this.data.description;
    return c;
  },
  load(id) {
    const scenes = (window.PLAYGROUND_SCENES = window.PLAYGROUND_SCENES || {});
    if (scenes[id]) return Promise.resolve(scenes[id]);
    return new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = `data/${id}.js`;
      s.onload = () => resolve(scenes[id]);
      s.onerror = () => reject(new Error(`could not load data/${id}.js`));
      document.head.append(s);
    });
  },
  async surface(scene) { return (await this.load(scene.surface)).surface; },
  grid(sceneId, key) {
    const scene = (window.PLAYGROUND_SCENES || {})[sceneId];
    return scene ? scene.runs[key] || [] : [];
  },
  // The values precomputed for one setting of an optimizer on a scene.
  choices(scene, key, name, index) {
    const runs = this.grid(scene.surface, key);
    const vals = runs.map((r) => (index === null ? r.settings[name] : r.settings[name][index]));
    const uniq = [...new Set(vals.map((v) => JSON.stringify(v)))].map((v) => JSON.parse(v));
    return uniq.sort((a, b) => a - b);
  },
  pick(sceneId, want) {
    const runs = this.grid(sceneId, want.key);
    let best = null, bestD = Infinity;
    for (const r of runs) {
      let d = 0;
      for (const [name, v] of Object.entries(r.settings)) {
        const w = want[name] === undefined ? v : want[name];
        const pair = Array.isArray(v) ? v.map((c, i) => [c, w[i]]) : [[v, w]];
        for (const [a, b] of pair) d += a > 0 && b > 0 ? Math.abs(Math.log(a / b)) : Math.abs(a - b);
      }
      if (d < bestD) { bestD = d; best = r; }
    }
    if (!best) throw new Error(`${want.key} was not precomputed on this surface`);
    return best;
  },
  async race(body) {
    const scene = await this.load(body.surface);
    const picked = body.optimizers.map((o) => this.pick(body.surface, o));
    const out = { surface: scene.surface, start: scene.surface.start, steps: scene.steps, noise: 0, runs: picked.map((p) => p.trace) };
    if (scene.theory) out.theory = { ...scene.theory, runs: picked.map((p) => p.theory) };
    return out;
  },
  async tune(body) {
    const scene = await this.load(body.surface);
    const settings = scene.tuned[body.key];
    if (!settings) throw new Error(`no tuned setting of ${body.key} was precomputed here`);
    return { key: body.key, settings, candidates: scene.candidates[body.key], diverged: scene.diverged[body.key] };
  },
};

window.addEventListener("DOMContentLoaded", () => {
  const backend = window.PLAYGROUND_DATA ? StaticBackend : LiveBackend;
  App.init(backend).catch((err) => UI.error ? UI.error(String(err.message || err)) : console.error(err));
});
