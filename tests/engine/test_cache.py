"""The kernel cache, as processes meet it: a cold first run and a warm one give the same
bits, a warm process loads without tracing or compiling, concurrent processes build a
kernel once, a failed build is recorded and the steps run eagerly, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import descent
from descent.cli.main import main as cli
from descent.engine import aot, cache, native

pytestmark = pytest.mark.compiled

TRAIN = textwrap.dedent(
    r"""
    import json, sys, time, torch, descent
    from descent.engine import aot, kernels
    mode = {"auto": "auto", "1": True, "0": False}[sys.argv[1]]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    opt = descent.RMSprop(model.parameters(), lr=0.01, momentum=0.5, centered=True, compile=mode)
    data = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    t0 = time.perf_counter()
    for step in range(120):
        if step == 60 and sys.argv[2] == "hold":
            # the cold run: give the background build the time it needs, mid-run
            deadline = time.monotonic() + 300
            while not list(aot.kernel_dir().glob("*.pt2")) and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(0.5)
        opt.zero_grad()
        model(data).sin().mean().backward()
        opt.step()
        if step == 0:
            first = time.perf_counter() - t0
    torch.save([p.detach() for p in model.parameters()], sys.argv[3])
    loaded = {m: m in sys.modules for m in ("torch._inductor", "torch._dynamo")}
    print(json.dumps({**kernels.stats, "first_step_s": first, **loaded}))
    """
)


@pytest.fixture(scope="module")
def fresh_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("kernels")


def _train(tmp_path, cache_dir, mode, hold, name, **env):
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    out = tmp_path / f"{name}.pt"
    proc = subprocess.run(
        [sys.executable, str(script), mode, hold, str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "DESCENT_CACHE_DIR": str(cache_dir), "DESCENT_BUILD": "1", **env},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), torch.load(out)


def test_cold_and_warm_runs_give_the_same_bits(tmp_path, fresh_cache):
    """The first run on a machine steps eagerly while its kernel builds in the
    background and switches to it mid-run; a later run uses it from the first step; a
    run with compiling off never does. All three end on the same bits."""
    cold, p_cold = _train(tmp_path, fresh_cache, "auto", "hold", "cold")
    assert cold["eager_calls"] > 0 and cold["compiled_calls"] > 0, cold
    warm, p_warm = _train(tmp_path, fresh_cache, "auto", "go", "warm")
    assert warm["eager_calls"] == 0 and warm["compiled_calls"] == 120 and warm["loaded"] == 1, warm
    # loading a built kernel needs neither dynamo nor inductor in the process
    assert not warm["torch._inductor"] and not warm["torch._dynamo"], warm
    off, p_off = _train(tmp_path, fresh_cache, "0", "go", "off")
    assert off["compiled_calls"] == 0
    for a, b, c in zip(p_cold, p_warm, p_off):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_concurrent_processes_build_a_kernel_once(tmp_path):
    """Two processes that need the same missing kernel at the same moment: one builds,
    the other waits on the lock and loads the result."""
    script = tmp_path / "one.py"
    script.write_text(
        "import torch, descent\n"
        "p = [torch.nn.Parameter(torch.randn(100))]\n"
        "p[0].grad = torch.randn(100)\n"
        "descent.Adamax(p, compile=True).step()\n"
    )
    env = {**os.environ, "DESCENT_CACHE_DIR": str(tmp_path / "c")}
    procs = [
        subprocess.Popen([sys.executable, str(script)], env=env, stderr=subprocess.PIPE) for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()
    log = (tmp_path / "c" / "kernels" / "build.log").read_text()
    assert log.count(" built ") == 1, log
    assert len(list((tmp_path / "c" / "kernels").glob("*.pt2"))) == 1


def test_a_failed_build_is_recorded_once_and_steps_run_eagerly(tmp_path):
    """No working C++ compiler: the build fails, the reason is kept, the steps run
    eagerly with a warning, and a later process does not try again."""
    script = tmp_path / "fail.py"
    script.write_text(
        "import warnings, torch, descent\n"
        "from descent.engine import kernels\n"
        "p = [torch.nn.Parameter(torch.randn(100))]\n"
        "p[0].grad = torch.randn(100)\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    descent.Lion(p, compile=True).step()\n"
        "print(kernels.stats['eager_calls'], kernels.stats['compiled_calls'], [str(x.message) for x in w])\n"
        "from descent.engine import native\n"
        "print('native:', native.build(), native.why_not().splitlines()[1])\n"
    )
    env = {**os.environ, "DESCENT_CACHE_DIR": str(tmp_path / "c"), "CXX": "/bin/false"}
    outs = []
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stderr
        outs.append(proc.stdout)
    for out in outs:
        assert out.startswith("1 0 ") and "no compiled kernel for Lion" in out, out
        assert "native: None the C++ compiler failed (exit status 1)" in out, out
    failed = [f for f in (tmp_path / "c" / "kernels").glob("*.failed") if not f.name.startswith("native-")]
    assert len(failed) == 1 and "Lion float32 cpu" in failed[0].read_text()
    # the C++ bookkeeping failed to build as well: recorded once, its steps the Python way
    native = list((tmp_path / "c" / "kernels").glob("native-*.failed"))
    assert len(native) == 1 and "the C++ compiler failed" in native[0].read_text()
    listed = subprocess.run(
        [sys.executable, "-m", "descent.cli.main", "cache", "info"], env=env, capture_output=True, text=True
    )
    assert "C++ gradient bookkeeping" in listed.stdout and "Lion" in listed.stdout, listed.stdout
    log = (tmp_path / "c" / "kernels" / "build.log").read_text()
    assert log.count(" failed ") == 1  # the second process did not build again


def test_the_name_follows_the_rule_source(tmp_path, monkeypatch):
    """Editing a transform's source gives its kernel a new name (an old kernel is never
    loaded for new math); the name is the same in every process."""
    from descent import rules
    from descent.rules.base import Chain

    mod = tmp_path / "my_rules.py"
    code = (
        "from descent.rules import Transform\n"
        "class Halve(Transform):\n"
        "    def apply(self, u, g, p, s, h):\n"
        "        return u * {}\n"
    )
    mod.write_text(code.format("0.5"))
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import my_rules

    def name():
        spec = aot.Spec(Chain([my_rules.Halve()]), ((), (), ()), ((), (), ("lr",)), torch.float32, "cpu")
        return aot.digest(spec)

    first = name()
    mod.write_text(code.format("0.25"))
    importlib.reload(my_rules)
    assert name() != first
    mod.write_text(code.format("0.5"))
    importlib.reload(my_rules)
    assert name() == first
    probe = (
        "import sys, torch; sys.path.insert(0, sys.argv[1]); import my_rules\n"
        "from descent.engine import aot; from descent.rules.base import Chain\n"
        "print(aot.digest(aot.Spec(Chain([my_rules.Halve()]), ((), (), ()), ((), (), ('lr',)),"
        " torch.float32, 'cpu')))\n"
    )
    other = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True)
    assert other.stdout.strip() == first, other.stderr
    scope: dict = {"Transform": rules.Transform}
    exec("class Floating(Transform):\n    def apply(self, u, g, p, s, h):\n        return u\n", scope)
    with pytest.raises(aot.Uncacheable):
        aot.digest(
            aot.Spec(Chain([scope["Floating"]()]), ((), (), ()), ((), (), ("lr",)), torch.float32, "cpu")
        )


def test_warmup_info_and_clear(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DESCENT_CACHE_DIR", str(tmp_path))
    assert cli(["warmup", "--optimizers", "sgd", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    # plain SGD and with L2, each one call a piece and the windows kernel (fresh
    # gradients), and the C++ gradient bookkeeping
    cxx = native.unavailable() is None  # (where it cannot be built: the kernels alone)
    n = 5 if cxx else 4
    assert str(tmp_path / "kernels") in out and f"{n} built" in out and (native.WHAT in out) == cxx, out
    assert cli(["warmup", "--optimizers", "sgd", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "0 built" in out and "4 already there" in out, out
    entries = cache.info()
    assert len(entries) == n and all(e.failed is None and e.size > 0 for e in entries)
    assert sum("x16 windows" in e.kernel for e in entries) == 2
    assert sum(e.kernel == native.WHAT for e in entries) == int(cxx)
    assert cli(["cache", "info"]) == 0
    assert f"{n} kernels" in capsys.readouterr().out
    assert cli(["cache", "clear"]) == 0
    assert "removed" in capsys.readouterr().out
    assert cache.info() == [] and not list((tmp_path / "kernels").glob("*.pt2"))


def test_warmup_rejects_bad_input(capsys):
    assert cli(["warmup", "--dtypes", "float8"]) == 2
    assert "Invalid dtype 'float8'" in capsys.readouterr().err
    assert cli(["warmup", "--optimizers", "adamz"]) == 2
    assert "Unknown optimizer 'adamz'" in capsys.readouterr().err
    assert cli(["warmup", "--state-dtype", "4bit"]) == 2
    assert "Invalid state_dtype: '4bit'" in capsys.readouterr().err


def test_warmup_builds_the_state_formats_kernels_when_asked(monkeypatch, capsys):
    asked = []

    def fake(opts, dtypes, device, log):
        asked.extend(s for o in opts for d in dtypes for s in cache.specs(o, d, device))
        return cache.Summary()

    monkeypatch.setattr(cache, "warmup", fake)
    assert cli(["warmup", "--optimizers", "adam", "--device", "cpu", "--state-dtype", "8bit"]) == 0
    formats_asked = {s.fmt.state if s.fmt else None for s in asked}
    assert formats_asked == {None, "8bit"}  # small tensors keep full precision: both
    asked.clear()
    assert cli(["warmup", "--optimizers", "adam", "--device", "cpu"]) == 0
    assert {s.fmt for s in asked} == {None}


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DESCENT_CACHE_DIR", str(tmp_path / "x"))
    assert aot.kernel_dir() == tmp_path / "x" / "kernels"
    monkeypatch.delenv("DESCENT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert aot.kernel_dir() == tmp_path / "xdg" / "descent" / "kernels"
    assert Path(aot.kernel_dir()).parent.name == "descent"


def test_warmup_covers_state_formats_and_guarded_kernels(monkeypatch):
    """The kernels a warm-up builds for an optimizer with ``state_dtype`` and
    ``skip_nonfinite`` are the ones its steps ask for: the format's and the full-precision
    one (small tensors), each plain and guarded."""
    from descent.engine import kernels

    monkeypatch.setenv("DESCENT_BUILD", "0")  # (the steps below ask for kernels, build none)
    kernels.reset()
    big, small = torch.nn.Parameter(torch.randn(64, 128)), torch.nn.Parameter(torch.randn(8))
    opt = descent.Adam([big, small], lr=1e-2, state_dtype="8bit", skip_nonfinite=True)
    warm = {aot.digest(s) for s in cache.specs(opt, torch.float32, "cpu")}
    kinds = {(s.fmt.state if s.fmt else None, s.guard) for s in cache.specs(opt, torch.float32, "cpu")}
    assert kinds == {("8bit", False), ("8bit", True), (None, False), (None, True)}
    for ps in ([big, small], [big]):  # two pieces (checked before, plain kernels), one (guarded)
        for p in ps:
            p.grad = torch.ones_like(p)
        opt.step()
        big.grad = small.grad = None
    asked = {aot.digest(k.spec) for k in kernels._kernels.values()}
    assert asked and asked <= warm, asked - warm
