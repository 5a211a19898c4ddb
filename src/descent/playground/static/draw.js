// Drawing only: contours of a surface sampled by the server, paths, arrows, the loss
// plot. No optimizer math lives here; every number drawn comes from descent's Python.
"use strict";

const Draw = (() => {
  const PALETTE = [[253, 253, 252], [236, 241, 246], [214, 224, 235], [184, 199, 216], [150, 168, 191]];

  function decodeGrid(grid) {
    const raw = atob(grid.z);
    const bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return new Float32Array(bytes.buffer);
  }

  function ramp(u) {
    const t = Math.min(1, Math.max(0, u)) * (PALETTE.length - 1);
    const i = Math.min(PALETTE.length - 2, Math.floor(t));
    const f = t - i;
    return PALETTE[i].map((c, k) => Math.round(c + f * (PALETTE[i + 1][k] - c)));
  }

  // How a value maps to [0, 1] for colour and contour levels: log-spaced above the
  // minimum for surfaces spanning decades, linear for the others.
  function scaler(surface, zmin, zmax) {
    const span = Math.max(zmax - zmin, 1e-12);
    if (!surface.log_levels) return { u: (z) => (z - zmin) / span, level: (s) => zmin + s * span };
    const d = span * 1e-4;
    const lo = Math.log(d), hi = Math.log(span + d);
    return {
      u: (z) => (Math.log(Math.max(z - zmin, 0) + d) - lo) / (hi - lo),
      level: (s) => zmin + Math.exp(lo + s * (hi - lo)) - d,
    };
  }

  // Marching squares: segments of the level set {z = level} on the grid, in grid units.
  function isolines(z, nx, ny, level) {
    const segs = [];
    const at = (i, j) => z[j * nx + i];
    const cross = (a, b) => (level - a) / (b - a);
    for (let j = 0; j < ny - 1; j++) {
      for (let i = 0; i < nx - 1; i++) {
        const a = at(i, j), b = at(i + 1, j), c = at(i + 1, j + 1), d = at(i, j + 1);
        const idx = (a > level) | ((b > level) << 1) | ((c > level) << 2) | ((d > level) << 3);
        if (idx === 0 || idx === 15) continue;
        const pts = {
          s: [i + cross(a, b), j], e: [i + 1, j + cross(b, c)],
          n: [i + cross(d, c), j + 1], w: [i, j + cross(a, d)],
        };
        const table = {
          1: ["sw"], 2: ["se"], 3: ["we"], 4: ["en"], 5: ["sw", "en"], 6: ["sn"], 7: ["wn"],
          8: ["wn"], 9: ["sn"], 10: ["se", "wn"], 11: ["en"], 12: ["we"], 13: ["se"], 14: ["sw"],
        };
        for (const pair of table[idx]) segs.push([pts[pair[0]], pts[pair[1]]]);
      }
    }
    return segs;
  }

  // The picture of a surface, drawn once per surface into an offscreen canvas.
  function background(surface, width, height, dpr) {
    const { nx, ny } = surface.grid;
    const z = decodeGrid(surface.grid);
    let zmin = Infinity, zmax = -Infinity;
    for (const v of z) if (Number.isFinite(v)) { zmin = Math.min(zmin, v); zmax = Math.max(zmax, v); }
    const sc = scaler(surface, zmin, zmax);
    const img = new ImageData(nx, ny);
    for (let j = 0; j < ny; j++) {
      for (let i = 0; i < nx; i++) {
        const [r, g, b] = ramp(sc.u(z[j * nx + i]));
        const o = ((ny - 1 - j) * nx + i) * 4;  // rows run bottom-up in the grid
        img.data[o] = r; img.data[o + 1] = g; img.data[o + 2] = b; img.data[o + 3] = 255;
      }
    }
    const small = document.createElement("canvas");
    small.width = nx; small.height = ny;
    small.getContext("2d").putImageData(img, 0, 0);
    const out = document.createElement("canvas");
    out.width = Math.round(width * dpr); out.height = Math.round(height * dpr);
    const ctx = out.getContext("2d");
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(small, 0, 0, out.width, out.height);
    ctx.scale(dpr, dpr);
    const gx = (i) => (i / (nx - 1)) * width, gy = (j) => height - (j / (ny - 1)) * height;
    const levels = 22;
    for (let k = 1; k < levels; k++) {
      const level = sc.level(k / levels);
      ctx.strokeStyle = `rgba(55, 70, 95, ${k % 4 === 0 ? 0.42 : 0.2})`;
      ctx.lineWidth = k % 4 === 0 ? 1 : 0.7;
      ctx.beginPath();
      for (const [p, q] of isolines(z, nx, ny, level)) {
        ctx.moveTo(gx(p[0]), gy(p[1]));
        ctx.lineTo(gx(q[0]), gy(q[1]));
      }
      ctx.stroke();
    }
    return out;
  }

  // World ↔ canvas (CSS pixels) for a window [x0, x1] × [y0, y1].
  function view(win, width, height) {
    const [x0, x1, y0, y1] = win;
    return {
      x: (x) => ((x - x0) / (x1 - x0)) * width,
      y: (y) => height - ((y - y0) / (y1 - y0)) * height,
      wx: (px) => x0 + (px / width) * (x1 - x0),
      wy: (py) => y0 + ((height - py) / height) * (y1 - y0),
      perUnit: width / (x1 - x0),
    };
  }

  function star(ctx, x, y, r) {
    ctx.beginPath();
    for (let k = 0; k < 10; k++) {
      const a = -Math.PI / 2 + (k * Math.PI) / 5, rr = k % 2 ? r * 0.45 : r;
      ctx.lineTo(x + rr * Math.cos(a), y + rr * Math.sin(a));
    }
    ctx.closePath();
    ctx.fillStyle = "#f5c518"; ctx.fill();
    ctx.strokeStyle = "#6b5200"; ctx.lineWidth = 1; ctx.stroke();
  }

  function cross(ctx, x, y, r, color, width) {
    ctx.strokeStyle = color; ctx.lineWidth = width;
    ctx.beginPath();
    ctx.moveTo(x - r, y - r); ctx.lineTo(x + r, y + r);
    ctx.moveTo(x + r, y - r); ctx.lineTo(x - r, y + r);
    ctx.stroke();
  }

  function arrow(ctx, x0, y0, x1, y1, color, opts = {}) {
    const len = Math.hypot(x1 - x0, y1 - y0);
    if (!(len > 0.5)) return false;
    const head = Math.min(10, 0.35 * len + 3), a = Math.atan2(y1 - y0, x1 - x0);
    ctx.save();
    ctx.strokeStyle = color; ctx.fillStyle = color;
    ctx.lineWidth = opts.width || 2;
    ctx.setLineDash(opts.dash || []);
    ctx.beginPath(); ctx.moveTo(x0, y0);
    ctx.lineTo(x1 - 0.8 * head * Math.cos(a), y1 - 0.8 * head * Math.sin(a)); ctx.stroke();
    ctx.setLineDash([]);
    ctx.beginPath(); ctx.moveTo(x1, y1);
    ctx.lineTo(x1 - head * Math.cos(a - 0.4), y1 - head * Math.sin(a - 0.4));
    ctx.lineTo(x1 - head * Math.cos(a + 0.4), y1 - head * Math.sin(a + 0.4));
    ctx.closePath(); ctx.fill();
    if (opts.label) {
      ctx.font = "12px system-ui, sans-serif";
      ctx.fillStyle = "#1d2330";
      ctx.fillText(opts.label, x1 + 4 * Math.cos(a) + 3, y1 + 4 * Math.sin(a) - 3);
    }
    ctx.restore();
    return true;
  }

  function path(ctx, v, xy, upto, color, opts = {}) {
    ctx.save();
    ctx.strokeStyle = color; ctx.globalAlpha = opts.alpha ?? 1;
    ctx.lineWidth = opts.width || 2; ctx.lineJoin = "round";
    ctx.setLineDash(opts.dash || []);
    ctx.beginPath();
    let pen = false;
    for (let k = 0; k <= Math.min(upto, xy.length - 1); k++) {
      const p = xy[k];
      if (!p) { pen = false; continue; }
      if (pen) ctx.lineTo(v.x(p[0]), v.y(p[1])); else ctx.moveTo(v.x(p[0]), v.y(p[1]));
      pen = true;
    }
    ctx.stroke();
    ctx.restore();
  }

  // The loss-versus-step plot: log scale where every loss is positive.
  function losses(canvas, runs, frame, steps, opts = {}) {
    const dpr = window.devicePixelRatio || 1;
    const W = canvas.clientWidth, H = canvas.clientHeight;
    canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);
    const ctx = canvas.getContext("2d");
    ctx.scale(dpr, dpr);
    ctx.clearRect(0, 0, W, H);
    const vals = runs.flatMap((r) => r.loss.filter((x) => x !== null && Number.isFinite(x)));
    if (!vals.length) return;
    const log = vals.every((x) => x > 0);
    const tf = log ? (x) => Math.log10(x) : (x) => x;
    let lo = Math.min(...vals.map(tf)), hi = Math.max(...vals.map(tf));
    if (log) lo = Math.max(lo, hi - 16);
    if (hi - lo < 1e-9) { hi += 1; lo -= 1; }
    const m = { l: 48, r: 10, t: 10, b: 26 };
    const plot = {
      ctx, log, tf, lo, hi, W, H, m,
      px: (k) => m.l + (k / Math.max(steps, 1)) * (W - m.l - m.r),
      py: (y) => m.t + (1 - (Math.max(lo, Math.min(hi, y)) - lo) / (hi - lo)) * (H - m.t - m.b),
    };
    axes(plot, steps);
    for (const env of opts.envelopes || []) envelope(plot, env, steps);
    for (const r of runs) lossLine(plot, r, frame);
    ctx.strokeStyle = "rgba(30,35,48,0.5)"; ctx.setLineDash([3, 3]);
    ctx.beginPath(); ctx.moveTo(plot.px(frame), m.t); ctx.lineTo(plot.px(frame), H - m.b); ctx.stroke();
    ctx.setLineDash([]);
  }

  function axes({ ctx, log, lo, hi, W, H, m, py }, steps) {
    ctx.font = "11px system-ui, sans-serif"; ctx.fillStyle = "#56607a"; ctx.strokeStyle = "#e3e7ee";
    const ticks = log ? range(Math.ceil(lo), Math.floor(hi), Math.max(1, Math.ceil((hi - lo) / 6))) : niceTicks(lo, hi);
    for (const t of ticks) {
      ctx.beginPath(); ctx.moveTo(m.l, py(t)); ctx.lineTo(W - m.r, py(t)); ctx.stroke();
      ctx.fillText(log ? `1e${t}` : fmtTick(t), 4, py(t) + 4);
    }
    ctx.fillText("step", W - m.r - 26, H - 8);
    ctx.fillText("0", m.l, H - 8);
    ctx.fillText(String(steps), W - m.r - 40, H - 20);
    ctx.textAlign = "right";
    ctx.fillText(log ? "loss f(θ), log scale" : "loss f(θ)", W - m.r - 4, m.t + 12);
    ctx.textAlign = "left";
  }

  // A rate theory predicts, drawn as f₀·ρ²ᵏ (dashed) until it leaves the plot.
  function envelope({ ctx, tf, lo, px, py }, env, steps) {
    ctx.save(); ctx.strokeStyle = env.color; ctx.setLineDash([5, 4]); ctx.lineWidth = 1.2; ctx.globalAlpha = 0.8;
    ctx.beginPath();
    let started = false;
    for (let k = 0; k <= steps; k += Math.max(1, Math.floor(steps / 200))) {
      const y = tf(env.at(k));
      if (!Number.isFinite(y) || y < lo) break;
      if (started) ctx.lineTo(px(k), py(y)); else { ctx.moveTo(px(k), py(y)); started = true; }
    }
    ctx.stroke(); ctx.restore();
  }

  function lossLine({ ctx, log, tf, px, py }, r, frame) {
    const ok = (y) => y !== null && Number.isFinite(y) && (!log || y > 0);
    ctx.save(); ctx.strokeStyle = r.color; ctx.lineWidth = 1.8; ctx.setLineDash(r.dash || []);
    ctx.beginPath();
    let pen = false;
    r.loss.forEach((y, k) => {
      if (!ok(y)) { pen = false; return; }
      if (pen) ctx.lineTo(px(k), py(tf(y))); else ctx.moveTo(px(k), py(tf(y)));
      pen = true;
    });
    ctx.stroke(); ctx.restore();
    const y = r.loss[Math.min(frame, r.loss.length - 1)];
    if (ok(y)) { ctx.fillStyle = r.color; ctx.beginPath(); ctx.arc(px(frame), py(tf(y)), 3.5, 0, 2 * Math.PI); ctx.fill(); }
  }

  function range(a, b, step) {
    const out = [];
    for (let t = a; t <= b; t += step) out.push(t);
    return out;
  }

  function niceTicks(lo, hi) {
    const step = Math.pow(10, Math.floor(Math.log10((hi - lo) / 4)));
    const k = (hi - lo) / step > 8 ? 2 * step : step;
    return range(Math.ceil(lo / k) * k, hi, k);
  }

  function fmtTick(t) {
    return Math.abs(t) >= 1e4 || (t !== 0 && Math.abs(t) < 1e-2) ? t.toExponential(0) : String(+t.toPrecision(3));
  }

  return { background, view, star, cross, arrow, path, losses };
})();
