"""Pictures and the animate/gallery commands: files, frames, sizes, and clean failures."""

import re

import pytest
from PIL import Image

from descent import catalog
from descent.cli.main import main
from descent.landscapes import render, render_gallery, tuning, write_index
from descent.landscapes.surfaces import SURFACES

SMALL = (320, 200)


def _tuned(surface, keys, steps):
    return {k: tuning.defaults(surface, catalog.get(k), steps) for k in keys}


def test_gif_has_the_frames_and_size_asked_for(tmp_path):
    surface = SURFACES["beale"]
    tuned = _tuned(surface, ["sgd", "adam"], 20)
    calls = []
    out = render.animate(
        surface, tuned, tmp_path / "b.gif", frames=6, size=SMALL, progress=lambda i, n: calls.append((i, n))
    )
    with Image.open(out) as im:
        assert im.format == "GIF" and im.size == SMALL
        assert im.n_frames == 6 == len(render.frame_steps(20, 6))
        im.seek(0)
        first = im.convert("RGB").tobytes()
        im.seek(5)
        assert im.convert("RGB").tobytes() != first  # the markers moved
    assert calls[-1] == (5, 6)
    assert [p.name for p in tmp_path.iterdir()] == ["b.gif"]


def test_frame_steps_cover_start_and_end():
    assert render.frame_steps(300, 90)[0] == 0 and render.frame_steps(300, 90)[-1] == 300
    assert len(render.frame_steps(300, 90)) == 90
    assert render.frame_steps(5, 90) == [0, 1, 2, 3, 4, 5]


def test_png_of_final_paths(tmp_path):
    surface = SURFACES["saddle"]
    out = render.render(surface, _tuned(surface, ["sgd", "rmsprop"], 15), tmp_path / "s.png", size=SMALL)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == SMALL


def test_legend_label_shows_lr_and_knob():
    t = tuning.Tuned("adam", 0.0562341, {"betas": (0.9, 0.999)})
    assert render.label(catalog.get("adam"), t) == "Adam  lr=0.0562 β=(0.9, 0.999)"


def test_render_rejects_other_extensions(tmp_path):
    surface = SURFACES["booth"]
    with pytest.raises(ValueError, match="x.jpg"):
        render.render(surface, _tuned(surface, ["sgd"], 3), tmp_path / "x.jpg")
    assert list(tmp_path.iterdir()) == []


def test_gallery_renders_every_surface_asked_and_an_offline_index(tmp_path):
    out = tmp_path / "gal"
    results = render_gallery(
        out, surfaces=["booth", "saddle"], optimizers=["sgd", "adam"], steps=12, fmt="png", progress=False
    )
    assert [r["surface"] for r in results] == ["booth", "saddle"]
    for r in results:
        assert r["path"].exists() and r["path"].parent == out and r["title"] == SURFACES[r["surface"]].title
        assert set(r["tuned"]) == {"sgd", "adam"}
        assert set(r["tuned"]["adam"]) == {"lr", "betas"} and r["tuned"]["adam"]["lr"] in tuning.LR_GRID
    index = write_index(out, results).read_text()
    assert re.findall(r'<img src="([^"]+)"', index) == ["booth.png", "saddle.png"]
    assert "http" not in index


def test_gallery_defaults_and_bad_arguments(tmp_path):
    (r,) = render_gallery(
        tmp_path, surfaces=["booth"], optimizers=["sgd"], steps=3, tune=False, progress=False
    )
    assert r["tuned"] == {"sgd": {"lr": catalog.get("sgd").default_lr}}
    with pytest.raises(ValueError, match="'jpg'"):
        render_gallery(tmp_path, fmt="jpg", progress=False)
    with pytest.raises(ValueError, match="'nope'"):
        render_gallery(tmp_path, surfaces=["nope"], progress=False)
    with pytest.raises(ValueError, match="'nope'"):
        render_gallery(tmp_path, optimizers=["nope"], progress=False)


def test_animate_command_writes_the_gif(tmp_path, capsys):
    out = tmp_path / "m.gif"
    argv = ["animate", "booth", "--optimizers", "sgd,adam", "--steps", "12", "--frames", "4"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    with Image.open(out) as im:
        assert im.n_frames == 4 and im.size == render.SIZE
    assert "Adam" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, named",
    [
        (["nope"], "'nope'"),
        (["beale", "--optimizers", "sgd,bogus"], "'bogus'"),
        (["beale", "--steps", "abc"], "'abc'"),
        (["beale", "--steps", "0"], "'0'"),
        (["beale", "--noise", "-1"], "'-1'"),
        (["beale", "--frames", "1"], "'1'"),
        (["beale", "--kappa", "5"], "kappa"),
        (["beale", "--out", "{tmp}/x.mp4"], "x.mp4"),
    ],
)
def test_animate_errors_name_the_bad_value_and_leave_no_file(tmp_path, monkeypatch, capsys, args, named):
    monkeypatch.chdir(tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["animate", *args, "--no-progress"]) == 2
    assert named in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_animate_failure_midway_leaves_no_partial_file(tmp_path, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(render.animation.PillowWriter, "finish", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        main(
            [
                "animate",
                "booth",
                "--optimizers",
                "sgd",
                "--steps",
                "3",
                "--out",
                str(tmp_path / "a.gif"),
                "--no-progress",
            ]
        )
    assert list(tmp_path.iterdir()) == []


def test_gallery_command_errors_and_output(tmp_path, capsys):
    assert main(["gallery", "--out", str(tmp_path / "g"), "--surfaces", "booth,nope", "--no-progress"]) == 2
    assert "'nope'" in capsys.readouterr().err
    assert main(["gallery", "--out", str(tmp_path / "g"), "--format", "bmp", "--no-progress"]) == 2
    assert "'bmp'" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()
    argv = ["gallery", "--out", str(tmp_path / "g"), "--surfaces", "booth", "--optimizers", "sgd"]
    assert main([*argv, "--steps", "5", "--format", "png", "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["booth.png", "index.html"]


def test_animate_reports_when_every_candidate_diverges(tmp_path, capsys):
    out = tmp_path / "n.png"
    argv = ["animate", "beale", "--optimizers", "sgd", "--noise", "1e6", "--steps", "20"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 1
    assert "diverged" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
