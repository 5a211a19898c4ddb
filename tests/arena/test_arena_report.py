"""End to end: a small arena on two worker processes writes a results.json that follows
its schema and its own protocol, reads back as the same records, and an index.html that
a real headless Chromium renders with every image loaded and no console errors — and that
``--report-only`` redraws byte for byte from the results.json alone."""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path

import pytest

import descent.arena as arena
from descent.arena import records
from descent.arena.present import gallery
from descent.arena.records import Results
from descent.cli.main import main
from descent.landscapes import gallery as landscape_gallery

OPTIMIZERS = ("sgd", "momentum", "adam")
BUDGET, SEEDS = 4, 2


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("arena") / "report"
    calls = []
    results = arena.run(
        tasks=["arena_tiny_task:make", "cancer_logreg"],
        optimizers=",".join(OPTIMIZERS),
        out=out,
        quick=True,
        budget=BUDGET,
        seeds=SEEDS,
        workers=2,
        landscapes=False,
        progress=lambda done, total, item: calls.append((done, total, item)),
    )
    return out, results, calls


# -- a JSON Schema subset, written here independently of the package ---------------------
_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
    "integer": int,
    "number": (int, float),
}


def validate(value, schema, path="$"):
    if "anyOf" in schema:
        errors = [validate(value, s, path) for s in schema["anyOf"]]
        return [] if any(not e for e in errors) else [f"{path}: matches no alternative ({errors})"]
    if "const" in schema:
        return [] if value == schema["const"] else [f"{path}: {value!r} != {schema['const']!r}"]
    if "enum" in schema:
        return [] if value in schema["enum"] else [f"{path}: {value!r} not in {schema['enum']}"]
    t = schema.get("type")
    if t:
        if isinstance(value, bool) and t in ("integer", "number"):
            return [f"{path}: boolean where {t} expected"]
        if not isinstance(value, _TYPES[t]):
            return [f"{path}: {type(value).__name__} where {t} expected"]
        if t == "number" and not math.isfinite(value):
            return [f"{path}: non-finite number"]
    if "minimum" in schema and value < schema["minimum"]:
        return [f"{path}: {value} < {schema['minimum']}"]
    errors = []
    if isinstance(value, dict):
        errors += [f"{path}: missing {k!r}" for k in schema.get("required", []) if k not in value]
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                errors += validate(v, props[k], f"{path}.{k}")
            elif extra is False:
                errors.append(f"{path}: unexpected key {k!r}")
            elif isinstance(extra, dict):
                errors += validate(v, extra, f"{path}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            errors += validate(v, schema["items"], f"{path}[{i}]")
    return errors


def test_validator_catches_errors():
    schema = {
        "type": "object",
        "required": ["a"],
        "properties": {"a": {"type": "integer"}},
        "additionalProperties": False,
    }
    assert validate({"a": 1}, schema) == []
    assert validate({"a": 1.5}, schema) and validate({}, schema) and validate({"a": 1, "b": 2}, schema)


def test_results_json_follows_the_schema(report):
    out, results, _ = report
    data = json.loads((out / "results.json").read_text())  # strict JSON: no NaN/Infinity
    assert validate(data, arena.SCHEMA) == []
    assert data["schema"] == arena.SCHEMA_ID
    assert data == json.loads(results.to_json())


def test_results_read_back_as_the_same_records(report, tmp_path):
    out, results, _ = report
    again = Results.from_json(out / "results.json")
    assert again == results
    assert again.to_json() == (out / "results.json").read_text()
    assert isinstance(again.runs[0], records.Run) and isinstance(again.studies[0].tuned, records.Summary)


def test_the_schema_is_held_to_the_record_fields(report):
    """Every record type's fields are exactly its schema's properties, all required, and
    the file has exactly those keys at every level the schema describes."""
    import dataclasses

    def check(cls, schema):
        names = [f.name for f in dataclasses.fields(cls)]
        assert list(schema["properties"]) == names and schema["required"] == names, cls.__name__
        assert schema["additionalProperties"] is False

    check(Results, arena.SCHEMA)
    check(records.Run, arena.SCHEMA["properties"]["runs"]["items"])
    check(records.StudyRecord, arena.SCHEMA["properties"]["studies"]["items"])
    check(records.Recommendation, arena.SCHEMA["properties"]["recommendation"])
    # a file with a key the records lack, or without one they have, does not validate
    out, _, _ = report
    data = json.loads((out / "results.json").read_text())
    data["runs"][0]["extra"] = 1
    assert validate(data, arena.SCHEMA) == ["$.runs[0]: unexpected key 'extra'"]
    del data["runs"][0]["extra"], data["studies"][0]["tuned"]["score"]
    assert validate(data, arena.SCHEMA) == ["$.studies[0].tuned: missing 'score'"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["runs"][0].pop("lr"), r"\$\.runs\[0\]: missing \['lr'\] for Run"),
        (lambda d: d["runs"][1].update(phase="warmup"), r"\$\.runs\[1\]\.phase is 'warmup', expected one of"),
        (
            lambda d: d["studies"][0]["tuned"].update(n="3"),
            r"\$\.studies\[0\]\.tuned\.n is '3', expected int",
        ),
        (
            lambda d: d.update(schema="descent.arena/results/0"),
            "is not a descent.arena/results/2 results file",
        ),
    ],
)
def test_a_bad_results_file_is_named(report, tmp_path, edit, message):
    out, _, _ = report
    data = json.loads((out / "results.json").read_text())
    edit(data)
    bad = tmp_path / "results.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        Results.from_json(bad)


def test_report_only_redraws_the_same_report(report, tmp_path, capsys):
    out, _, _ = report
    copy = tmp_path / "copy"
    assert (
        main(["arena", "--report-only", str(out / "results.json"), "--out", str(copy), "--workers", "0"]) == 0
    )
    assert "Recommended:" in capsys.readouterr().out
    assert (copy / "index.html").read_bytes() == (out / "index.html").read_bytes()
    assert (copy / "results.json").read_bytes() == (out / "results.json").read_bytes()
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == sorted(p.name for p in (copy / "figures").iterdir()) and len(figures) == 6
    for name in figures:
        assert (copy / "figures" / name).read_bytes() == (out / "figures" / name).read_bytes(), name
    # in place: index.html and figures/ are replaced, results.json is left as it was
    (copy / "figures" / figures[0]).unlink()
    (copy / "index.html").write_text("stale")
    assert main(["arena", "--report-only", str(copy / "results.json"), "--workers", "0"]) == 0
    assert (copy / "index.html").read_bytes() == (out / "index.html").read_bytes()
    assert (copy / "figures" / figures[0]).read_bytes() == (out / "figures" / figures[0]).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]  # no staging folder left


def test_one_score_ranks_everything(report):
    """A setting with a diverged seed is last everywhere the results are ranked: in the
    recommendation's per-problem ranks, the report's leaderboard and the summary's
    winners, all through ``records.score``."""
    import dataclasses

    _, results, _ = report
    assert records.score(0.3, False) == 0.3 and records.score(0.3, 2) == math.inf
    assert records.score(None, False) == math.inf
    for r in results.runs:
        final = r.final.val_loss if r.final else None
        assert r.score == records.score(final, r.diverged)
    for s in results.studies:
        t = s.tuned
        assert t.rank_score == records.score(t.val_loss.mean if t.val_loss else None, t.diverged)
        assert t.score == records.finite(t.rank_score)
    # make sgd diverge on one tuned seed of the first problem: it drops to last there
    first = results.studies[0]
    assert first.optimizer == "sgd"
    broken = dataclasses.replace(first, tuned=dataclasses.replace(first.tuned, diverged=1, score=None))
    studies = [broken, *results.studies[1:]]
    from descent.arena.analysis.recommend import recommend

    rec = recommend(studies, seeds=SEEDS)
    assert rec.ranks["tuned"][0]["sgd"] == len(OPTIMIZERS)
    from descent.arena.present.report import _leaderboard

    task = results.tasks[0]
    html = _leaderboard(
        [s for s in studies if (s.task, s.regime) == (first.task, first.regime)], task, results
    )
    rows = html.split("<tr>")[2:]
    assert "SGD" in rows[-1] and "(1 diverged)" in rows[-1]


def test_results_follow_the_protocol(report):
    out, _, calls = report
    data = json.loads((out / "results.json").read_text())
    problems = {(t["name"], r) for t in data["tasks"] for r in t["regimes"]}
    assert problems == {(n, r) for n in ("blobs", "cancer_logreg") for r in ("full", "minibatch")}
    assert len(data["studies"]) == len(problems) * len(OPTIMIZERS)
    assert len(data["runs"]) == len(data["studies"]) * (2 * SEEDS + BUDGET) == data["timing"]["runs"]
    n = len(data["runs"])
    assert calls[0] == (0, n, None)
    runs = [c for c in calls if isinstance(c[2], records.Run)]
    assert [c[0] for c in runs] == list(range(1, n + 1)) and all(c[1] == n for c in calls)
    assert sorted(c[2].id for c in runs) == sorted(r["id"] for r in data["runs"])
    assert [c[2] for c in calls if isinstance(c[2], str)] == ["drawing figures"]  # landscapes off
    for study in data["studies"]:
        runs = [
            r
            for r in data["runs"]
            if (r["task"], r["regime"], r["optimizer"])
            == (study["task"], study["regime"], study["optimizer"])
        ]
        tuning = [r for r in runs if r["phase"] in ("lr", "knob")]
        assert len(tuning) == BUDGET
        # the stated rule, applied to the JSON: lowest final val loss, diverged = +inf, first of ties
        best = min(
            tuning, key=lambda r: r["final"]["val_loss"] if r["final"] and not r["diverged"] else math.inf
        )
        assert study["best"]["id"] == best["id"] and study["best"]["lr"] == best["lr"]
        tuned = [r for r in runs if r["phase"] == "tuned"]
        assert sorted(r["seed"] for r in tuned) == list(range(1, SEEDS + 1))
        assert all(r["lr"] == best["lr"] and r["hyper"] == best["hyper"] for r in tuned)
        losses = [r["final"]["val_loss"] for r in tuned if r["final"]]
        if losses and not study["tuned"]["diverged"]:
            assert study["tuned"]["val_loss"]["mean"] == pytest.approx(sum(losses) / len(losses), rel=1e-4)


def test_report_files_and_recommendation(report):
    out, results, _ = report
    html = (out / "index.html").read_text()
    rec = results.recommendation
    assert rec.optimizer in OPTIMIZERS
    assert rec.text[0].startswith("Recommended: ")
    for line in rec.text:
        assert line.replace("'", "&#x27;") in html or line in html
    for src in _images(html):
        assert (out / src).is_file(), src
    assert len(_images(html)) == 2 * 2 + 2  # per task: curves and lr; ranks and profiles
    assert not list(out.parent.glob(".report.partial-*"))


def _images(html: str) -> list[str]:
    import re

    return re.findall(r"<img src=[\"']([^\"']+)[\"']", html)


def _blank(png: bytes) -> bool:
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    small = img.resize((200, 400))
    colors = small.getcolors(maxcolors=1 << 16) or []
    non_white = sum(n for n, c in colors if sum(c) < 3 * 245)
    return len(colors) < 20 or non_white < 0.03 * small.width * small.height


@pytest.mark.browser
def test_report_renders_in_chromium(report, tmp_path):
    arena_cdp = pytest.importorskip("arena_cdp")
    if arena_cdp.find_chromium() is None:
        pytest.skip("no chromium binary")
    out, _, _ = report
    expr = "document.body.getAttribute('data-images')"
    page = arena_cdp.open_page((out / "index.html").as_uri(), expr)
    n = len(_images((out / "index.html").read_text()))
    assert page.errors == []
    assert page.value == f"{n}/{n}"
    assert not _blank(page.screenshot)
    (tmp_path / "screenshot.png").write_bytes(page.screenshot)
    # the check itself can fail: a copy with a figure missing is caught
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    next((broken / "figures").iterdir()).unlink()
    page = arena_cdp.open_page((broken / "index.html").as_uri(), expr)
    assert page.value == f"{n - 1}/{n}" and any("failed to load" in e for e in page.errors)


def test_blank_detector():
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (300, 300), "white").save(buf, "PNG")
    assert _blank(buf.getvalue())


def test_landscapes_are_embedded(tmp_path, monkeypatch):
    from PIL import Image

    calls = []

    def render_gallery(
        out_dir, *, surfaces=None, optimizers=None, steps=None, fmt="gif", tune=True, progress=True
    ):
        calls.append({"surfaces": surfaces, "optimizers": optimizers, "fmt": fmt, "tune": tune})
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        items = []
        for key in surfaces:
            path = out_dir / f"{key}.{fmt}"
            Image.new("RGB", (64, 48), (200, 30, 30)).save(path)
            items.append(
                {"surface": key, "title": f"The {key} surface", "path": path, "tuned": {"adam": {"lr": 0.1}}}
            )
        return items

    monkeypatch.setattr(landscape_gallery, "render_gallery", render_gallery)
    monkeypatch.setattr(gallery, "SURFACES", {"beale": 1, "rosenbrock": 2, "saddle": 3})
    for quick in (True, False):
        out = tmp_path / f"quick-{quick}"
        results = arena.run(
            tasks=["arena_tiny_task:make"],
            optimizers="sgd,adam",
            out=out,
            quick=quick,
            budget=2,
            seeds=1,
            workers=0,
        )
        ext = "png" if quick else "gif"
        want = ["beale", "rosenbrock"] if quick else ["beale", "rosenbrock", "saddle"]
        mine = calls[-len(want) :]  # one surface per job, so the workers share them
        assert [c["surfaces"] for c in mine] == [[k] for k in want]
        assert all(c["optimizers"] == ["sgd", "adam"] and c["fmt"] == ext for c in mine)
        assert all(c["tune"] is (not quick) for c in mine)
        assert [i.surface for i in results.landscapes] == want
        html = (out / "index.html").read_text()
        for key in want:
            assert f"landscapes/{key}.{ext}" in html and f"The {key} surface" in html
            assert (out / "landscapes" / f"{key}.{ext}").is_file()
        assert results.landscapes[0].tuned == {"adam": {"lr": 0.1}}
    # redrawn elsewhere, the report keeps its pictures
    assert main(["arena", "--report-only", str(out), "--out", str(tmp_path / "again"), "--workers", "0"]) == 0
    assert (tmp_path / "again" / "index.html").read_bytes() == (out / "index.html").read_bytes()
    assert (tmp_path / "again" / "landscapes" / "saddle.gif").read_bytes() == (
        out / "landscapes" / "saddle.gif"
    ).read_bytes()


def test_a_failing_gallery_does_not_fail_the_arena(tmp_path, monkeypatch):
    def render_gallery(out_dir, **kw):
        raise RuntimeError("no surfaces today")

    monkeypatch.setattr(landscape_gallery, "render_gallery", render_gallery)
    results = arena.run(
        tasks=["arena_tiny_task:make"], optimizers="sgd", out=tmp_path / "r", budget=1, seeds=1, workers=0
    )
    assert results.landscapes is None and "no surfaces today" in results.landscapes_note
    assert "no surfaces today" in (tmp_path / "r" / "index.html").read_text()


def test_results_do_not_depend_on_the_workers(report, tmp_path):
    import dataclasses

    _, on_workers, _ = report
    inline = arena.run(
        tasks=["arena_tiny_task:make", "cancer_logreg"],
        optimizers=",".join(OPTIMIZERS),
        out=tmp_path / "inline",
        quick=True,
        budget=BUDGET,
        seeds=SEEDS,
        workers=0,
        landscapes=False,
    )

    def measured(run: records.Run) -> records.Run:  # everything but the wall-clock times
        return dataclasses.replace(run, train_time=None, time_to_target=None)

    assert [measured(r) for r in inline.runs] == [measured(r) for r in on_workers.runs]
    assert inline.recommendation == on_workers.recommendation
