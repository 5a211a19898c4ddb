"""The server and the command: the page and its assets from the package, JSON in and
out, errors that name the value, nothing fetched from elsewhere, a static export."""

from __future__ import annotations

import argparse
import json
import re
import threading
import urllib.error
import urllib.request
from importlib import resources

import pytest

from descent.cli import playground as command
from descent.cli.main import main
from descent.playground.server import PlaygroundServer


@pytest.fixture(scope="module")
def server():
    srv = PlaygroundServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def get(srv, path):
    with urllib.request.urlopen(srv.url.rstrip("/") + path, timeout=30) as r:
        return r.status, r.headers.get("Content-Type"), r.read()


def post(srv, path, body):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(
        srv.url.rstrip("/") + path, data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_listens_on_localhost_only(server):
    assert server.server_address[0] == "127.0.0.1" and server.url.startswith("http://127.0.0.1:")


def test_serves_the_page_and_its_assets(server):
    status, kind, body = get(server, "/")
    assert status == 200 and kind.startswith("text/html")
    for src in re.findall(rb'(?:src|href)="([^"]+)"', body):
        if src.startswith(b"data:"):
            continue
        status, _, asset = get(server, "/" + src.decode())
        assert status == 200 and asset


def test_nothing_is_fetched_from_elsewhere():
    """No asset names another host: no CDN, no web font, no remote script."""
    root = resources.files("descent.playground") / "static"
    names = [p.name for p in root.iterdir()]
    assert {"index.html", "app.js", "ui.js", "draw.js", "backend.js", "playground.css"} <= set(names)
    for item in root.iterdir():
        text = item.read_text(encoding="utf-8")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, flags=re.I), item.name
        assert "@import" not in text and "@font-face" not in text


def test_catalog_lists_every_optimizer_and_surface(server):
    from descent import catalog
    from descent.landscapes import surfaces

    _, _, body = get(server, "/api/catalog")
    data = json.loads(body)
    assert [o["key"] for o in data["optimizers"]] == [e.key for e in catalog.ENTRIES]
    assert [s["key"] for s in data["surfaces"]] == list(surfaces.SURFACES)
    adam = next(o for o in data["optimizers"] if o["key"] == "adam")
    assert adam["color"] == catalog.get("adam").color and adam["label"] == "Adam"
    assert set(adam["settings"]) == {"lr", "betas", "eps"}


def test_race_and_errors_over_http(server):
    status, data = post(
        server, "/api/race", {"surface": "saddle", "optimizers": [{"key": "adam", "lr": 0.05}]}
    )
    assert status == 200 and data["runs"][0]["reached_at"] is not None  # escaped the saddle
    status, data = post(server, "/api/race", {"surface": "saddle", "optimizers": [{"key": "adam", "lr": -2}]})
    assert status == 400 and "lr = -2" in data["error"]
    status, data = post(server, "/api/race", b"{not json")
    assert status == 400 and "not JSON" in data["error"]
    status, data = post(server, "/api/nothing", {})
    assert status == 404
    status, data = post(server, "/api/surface", {"surface": "quadratic", "kappa": 100, "angle": 30})
    assert status == 200 and data["grid"]["nx"] > 100 and "30°" in data["title"]


def test_the_command_serves_until_stopped():
    args = argparse.Namespace(
        port="0", no_browser=True, verbose=False, export=None, surfaces=None, optimizers=None, lrs="5"
    )
    seen = {}

    def ready(srv):
        seen["url"] = srv.url
        threading.Thread(target=lambda: (get(srv, "/"), srv.shutdown()), daemon=True).start()

    assert command.run(args, ready=ready) == 0
    assert seen["url"].startswith("http://127.0.0.1:")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "http"], "invalid --port 'http'"),
        (["--port", "70000"], "invalid --port '70000'"),
        (["--export", "{tmp}/x", "--surfaces", "moon"], "unknown scene 'moon'"),
        (["--export", "{tmp}/x", "--optimizers", "sgd,warp"], "'warp'"),
        (["--export", "{tmp}/x", "--lrs", "0"], "invalid --lrs '0'"),
    ],
)
def test_bad_arguments_are_named(tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["playground", *argv, "--no-browser"]) == 2
    assert message in capsys.readouterr().err


def test_export_writes_a_page_that_says_what_it_holds(tmp_path, capsys):
    out = tmp_path / "site"
    assert (
        main(
            [
                "playground",
                "--export",
                str(out),
                "--surfaces",
                "booth,quadratic-turned",
                "--optimizers",
                "sgd,momentum,adam",
                "--lrs",
                "3",
            ]
        )
        == 0
    )
    assert (out / "index.html").is_file() and (out / "data" / "booth.js").is_file()
    index = (out / "data" / "index.js").read_text()
    data = json.loads(index.split("=", 1)[1].rstrip().rstrip(";"))
    assert [s["id"] for s in data["scenes"]] == ["booth", "quadratic-turned"]
    assert (
        "computed ahead of time" in data["description"]
        and "10^k for k in {-0.5, 0, 0.5}" in data["description"]
    )
    scene = json.loads(
        (out / "data" / "quadratic-turned.js").read_text().split("] = ", 1)[1].rstrip().rstrip(";")
    )
    # 3 learning rates for SGD, × 3 momentum values, × 4 beta pairs
    assert [len(scene["runs"][k]) for k in ("sgd", "momentum", "adam")] == [3, 9, 12]
    tuned = scene["tuned"]["adam"]
    assert any(
        r["settings"]["lr"] == tuned["lr"] and r["settings"]["betas"] == tuned["betas"]
        for r in scene["runs"]["adam"]
    )
    assert scene["theory"]["methods"][1]["method"] == "heavy_ball"
    assert "wrote" in capsys.readouterr().out
