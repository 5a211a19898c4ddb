"""``index.html``: one self-contained page (inline CSS, figures beside it by relative
path), readable offline, written from a :class:`~descent.arena.records.Results` alone
(the same results give the same bytes). Every string from a task or the results is
escaped."""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import Any

from ... import catalog
from ..records import BUDGETS, Recommendation, Results, Stats, StudyRecord, TaskInfo
from ..tasks.data import REGIME_LABELS

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1280px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{margin:.2em 0}h2{border-bottom:2px solid #eee;padding-bottom:4px;margin-top:2em}
table{border-collapse:collapse;margin:8px 0 16px;font-size:12px}.scroll{overflow-x:auto}
th,td{padding:3px 6px;border-bottom:1px solid #e6e6e6;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td.l,th.l{text-align:left}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;vertical-align:middle}
.rec{background:#eef6ee;border-left:5px solid #3a7d44;padding:10px 16px;margin:12px 0}
.rec p.head{font-size:16px;font-weight:600;margin:.3em 0}.muted{color:#777}
.best{font-weight:700}figure{margin:10px 0}figure img{max-width:100%;height:auto}
.gallery{display:flex;flex-wrap:wrap;gap:16px}.gallery figure{width:580px}
figcaption{font-size:12px}
.warn{background:#fff3cd;padding:8px 12px;border-left:4px solid #d39e00}
nav a{margin-right:12px}code{background:#f3f3f3;padding:0 3px}
"""

# Flags missing images: a console error (the test's browser check) and a visible note.
SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.images, bad = [];
  for (var i = 0; i < imgs.length; i++) {
    if (!imgs[i].complete || imgs[i].naturalWidth === 0) bad.push(imgs[i].getAttribute('src'));
  }
  document.body.setAttribute('data-images', (imgs.length - bad.length) + '/' + imgs.length);
  if (bad.length) {
    console.error('report: ' + bad.length + ' image(s) failed to load: ' + bad.join(', '));
    var w = document.getElementById('img-warning');
    w.hidden = false;
    w.textContent = bad.length + ' figure(s) are missing next to this page: ' + bad.join(', ');
  }
});
"""


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{digits}g}"


def _pm(s: Stats | None) -> str:
    return "—" if not s else f"{fmt(s.mean)} ± {fmt(s.std, 1)}"


def _sw(color: str) -> str:
    return f'<span class="sw" style="background:{escape(color)}"></span>'


def _fig(path: str, alt: str) -> str:
    return f'<figure><img src="{escape(path)}" alt="{escape(alt)}" loading="eager"></figure>'


def render(results: Results, figures: dict[tuple[str, str], str], out: Path) -> Path:
    """Write ``out/index.html`` from the results and the figures' relative paths."""
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>descent arena — {escape(results.optimizer(results.recommendation.optimizer).label)}</title>",
        f"<style>{CSS}</style></head><body><main>",
        _header(results),
        _recommendation(results, figures),
    ]
    for task in results.tasks:
        parts.append(_task(task, results, figures))
    parts.append(_landscapes(results))
    parts.append(_protocol(results))
    parts.append(f"</main><script>{SCRIPT}</script></body></html>")
    path = out / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _header(results: Results) -> str:
    s, t = results.settings, results.timing
    links = "".join(f'<a href="#task-{escape(x.name)}">{escape(x.title)}</a>' for x in results.tasks)
    mode = "quick" if s.quick else "default"
    return (
        "<h1>descent arena</h1>"
        f"<p class='muted'>{escape(results.created)} · {mode} run · {len(s.tasks)} tasks · "
        f"{len(s.optimizers)} optimizers · tuning budget {s.budget} trials · {s.seeds} seeds · "
        f"{t.runs} training runs in {t.training_s:.0f} s on {s.workers or 1} worker(s), "
        f"{t.total_s:.0f} s in all · <a href='results.json'>results.json</a></p>"
        "<p id='img-warning' class='warn' hidden></p>"
        f"<nav><a href='#recommendation'>Recommendation</a>{links}<a href='#landscapes'>Landscapes</a>"
        "<a href='#protocol'>Protocol</a></nav>"
    )


def _recommendation(results: Results, figures: dict) -> str:
    rec = results.recommendation
    text = rec.text
    bullets = "".join(f"<li>{escape(line)}</li>" for line in text[1:])
    parts = [
        "<h2 id='recommendation'>Recommendation</h2>",
        f"<div class='rec'><p class='head'>{escape(text[0])}</p><ul>{bullets}</ul></div>",
        "<h3>Mean rank by data regime and tuning budget</h3>",
        _rank_table(rec, results),
    ]
    for key in ("ranks", "profiles"):
        if ("summary", key) in figures:
            parts.append(_fig(figures[("summary", key)], key))
    return "\n".join(parts)


def _rank_table(rec: Recommendation, results: Results) -> str:
    scopes = list(rec.leaderboards)
    head = "".join(
        f"<th colspan=2>{escape('all problems' if s == 'all' else REGIME_LABELS.get(s, s))}</th>"
        for s in scopes
    )
    sub = "".join("<th>tuned</th><th>defaults</th>" for _ in scopes)
    rows = []
    for o in results.optimizers:
        cells = []
        for s in scopes:
            for b in BUDGETS:
                row = rec.leaderboards[s][b].get(o.key)
                best = getattr(rec.choice[s], b) == o.key
                val = "—" if row is None else f"{row.mean_rank:.2f}"
                cells.append(f"<td class='{'best' if best else ''}'>{val}</td>")
        label = f"{_sw(o.color)}{escape(o.label)}"
        rows.append(f"<tr><td class='l'>{label}</td>{''.join(cells)}</tr>")
    return (
        f"<table><tr><th class='l' rowspan=2>optimizer</th>{head}</tr><tr>{sub}</tr>{''.join(rows)}</table>"
        "<p class='muted'>Rank 1 = lowest mean final validation loss on a problem; bold: the best "
        "mean rank in the column.</p>"
    )


def _task(task: TaskInfo, results: Results, figures: dict) -> str:
    name = task.name
    facts = (
        f"{task.n_train} training / {task.n_val} validation examples · {task.n_params} parameters · "
        f"metric: {task.metric_name} (target {fmt(task.target)}, chance {fmt(task.chance)})"
    )
    parts = [
        f"<h2 id='task-{escape(name)}'>{escape(task.title)}</h2>",
        f"<p>{escape(task.description)}<br><span class='muted'>{escape(facts)}</span></p>",
    ]
    for regime, info in task.regimes.items():
        parts.append(
            f"<h3>{escape(REGIME_LABELS.get(regime, regime))} — batch {info.batch_size}, "
            f"{info.steps} steps ({fmt(info.epochs)} epochs)</h3>"
        )
        parts.append(_leaderboard(results.studies_of(name, regime), task, results))
    for kind in ("curves", "lr"):
        if (kind, name) in figures:
            parts.append(_fig(figures[(kind, name)], f"{task.title} {kind}"))
    return "\n".join(parts)


def _leaderboard(studies: list[StudyRecord], task: TaskInfo, results: Results) -> str:
    metric = escape(task.metric_name)
    head = (
        "<tr><th class='l'>#</th><th class='l'>optimizer</th><th class='l'>tuned setting</th>"
        f"<th>val loss</th><th>val {metric}</th><th>train loss</th>"
        "<th title='seeds that reached the target · median steps · median training seconds'>"
        "to target</th>"
        f"<th>defaults: val loss</th><th>defaults: val {metric}</th><th>good lrs</th></tr>"
    )
    rows = []
    for i, s in enumerate(sorted(studies, key=lambda s: s.tuned.rank_score), 1):
        t, d, o = s.tuned, s.defaults, results.optimizer(s.optimizer)
        setting = f"lr {fmt(s.best.lr)}" + "".join(
            f", {escape(catalog.symbol(k))} {escape(_value(v))}" for k, v in s.best.hyper.items()
        )
        div = f" ({t.diverged} diverged)" if t.diverged else ""
        reach = f"{t.reached}/{t.n}"
        if t.reached:
            reach += f" · {fmt(t.steps_to_target)} · {fmt(t.time_to_target, 2)} s"
        rows.append(
            f"<tr><td class='l'>{i}</td><td class='l'>{_sw(o.color)}{escape(o.label)}</td>"
            f"<td class='l'>{setting}</td><td>{_pm(t.val_loss)}{div}</td><td>{_pm(t.val_metric)}</td>"
            f"<td>{_pm(t.train_loss)}</td><td>{reach}</td>"
            f"<td>{_pm(d.val_loss)}</td><td>{_pm(d.val_metric)}</td>"
            f"<td>{fmt(s.lr_window_decades, 2)} dec</td></tr>"
        )
    return f"<div class='scroll'><table>{head}{''.join(rows)}</table></div>"


def _value(v: Any) -> str:
    if isinstance(v, list | tuple):
        return "(" + ", ".join(fmt(x) for x in v) + ")"
    return fmt(v) if isinstance(v, float) else str(v)


def _landscapes(results: Results) -> str:
    items = results.landscapes
    head = "<h2 id='landscapes'>Landscapes</h2>"
    if not items:
        why = results.landscapes_note or "no landscape animations in this run"
        return f"{head}<p class='muted'>{escape(why)}.</p>"
    # each picture's legend carries the settings it drew (also in results.json)
    figs = "".join(
        f"<figure><img src='{escape(i.path)}' alt='{escape(i.title)}'>"
        f"<figcaption>{escape(i.title)}</figcaption></figure>"
        for i in items
    )
    intro = "<p>Trajectories of the same optimizers on classic 2-D loss surfaces.</p>"
    return f"{head}{intro}<div class='gallery'>{figs}</div>"


def _protocol(results: Results) -> str:
    rules = results.settings.rules
    items = "".join(f"<li><b>{escape(k)}</b>: {escape(str(v))}</li>" for k, v in rules.items())
    return f"<h2 id='protocol'>Protocol</h2><ul>{items}</ul>"
