"""The per-gradient bookkeeping of a step, in C++: built once per machine, optional.

A step with fresh gradients reads every param's ``.grad``, checks its dtype, device,
layout and shape, and gives each large one to its kernel as a 1-D window over its
memory. In Python that costs about a microsecond and a half a gradient (attribute
reads, a view through the dispatcher): at 611 K params in 39 tensors, 30 µs of a 330 µs
step. ``native.cpp`` does the same in a tenth of the time. It answers only the common
case; anything else (a missing or mismatched gradient, another layout) goes the Python
way, which names what is wrong, so the numbers and the errors are the same either way.
It also calls the CPU kernels through their libraries' C interface (:func:`kernel_handle`):
0.7 µs of fixed cost a call, against about 1.7 µs through torch's runner. And it holds
the block cache the step inside backward puts in front of torch's CPU allocator
(``block_cache``; see ``backward.keep_blocks``).

The module is compiled against this process's torch and Python with the C++ compiler
AOTInductor uses too (``$CXX``, else ``c++``; about 11 s on a 2-core machine), in a
background thread at the first step that could use it, into the kernel cache (keyed by
the source, torch's and Python's versions and the machine). Steps run the Python way
until it is ready. A build that fails leaves ``<digest>.failed`` with the compiler's
words and is not tried again (``descent cache clear`` forgets it). ``DESCENT_NATIVE=0``
turns it off.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import platform
import shlex
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
import zipfile
from pathlib import Path
from types import ModuleType

import torch

from . import aot

SOURCE = Path(__file__).with_name("native.cpp")

#: ``DESCENT_NATIVE=0``: never build nor use the module
ENV = "DESCENT_NATIVE"

#: what ``descent cache info`` calls the module
WHAT = "C++ gradient bookkeeping"

_module: ModuleType | None = None
_thread: threading.Thread | None = None
#: why the module is not available in this process (None: not known yet)
_failed: str | None = None
#: when to look in the cache again, where no build was started
_next_look = 0.0


def module() -> ModuleType | None:
    """The built module, or None: not built yet (the first call starts its build in the
    background), turned off, or failed to build."""
    if _module is not None:
        return _module
    return _next()


def _next() -> ModuleType | None:
    global _thread, _failed, _next_look
    if _failed is not None or (_thread is not None and _thread.is_alive()):
        return None
    _thread = None
    now = time.monotonic()
    if now < _next_look:  # (a module another process builds is looked for once a second)
        return None
    _next_look = now + 1.0
    if os.environ.get(ENV, "1") == "0":
        _failed = f"turned off ({ENV}=0)"
        return None
    path, failed, _ = paths()
    if path.exists():
        return _load(path)
    if failed.exists():
        _failed = failed.read_text(errors="replace")
        return None
    reason = unavailable()
    if reason is not None:
        _failed = reason
        return None
    if not aot.background_builds():  # (a later build() still may)
        return None
    _thread = threading.Thread(target=_in_background, name="descent-native-build", daemon=True)
    _thread.start()
    return None


def unavailable() -> str | None:
    """Why the module cannot be built here (None: it can)."""
    if os.environ.get(ENV, "1") == "0":
        return f"turned off ({ENV}=0)"
    if not sys.platform.startswith("linux"):
        return f"built on Linux only (this is {sys.platform})"
    if shutil.which(_compiler()) is None:
        return f"no C++ compiler ({_compiler()})"
    return None


def build() -> ModuleType | None:
    """Build (or load) the module now, waiting for it; None where it cannot be built
    (:func:`why_not` says why)."""
    global _thread, _next_look
    if _module is not None:
        return _module
    if _thread is not None:
        _thread.join()
        _thread = None
    _next_look = 0.0
    path, failed, _ = paths()
    if not path.exists() and not failed.exists() and unavailable() is None:
        compile_module()
    return _next()


def kernel_handle(pt2: Path) -> object | None:
    """The CPU kernel packaged at ``pt2``, opened by the module for its ``run`` and
    ``call``: its library is taken out of the package once, into the cache beside it.
    None where the module is not available or the package holds no library it can open
    (torch's runner runs the kernel then)."""
    mod = module()
    if mod is None:
        return None
    lib = pt2.with_suffix(".so")
    try:
        if not lib.exists():
            with zipfile.ZipFile(pt2) as package:
                name = next(n for n in package.namelist() if n.endswith(".so") and "/aotinductor/" in n)
                tmp = lib.with_name(f"{lib.name}.{os.getpid()}.tmp")
                tmp.write_bytes(package.read(name))
                os.replace(tmp, lib)  # (whole or absent, for a process opening it meanwhile)
        return mod.open_kernel(str(lib))
    except (OSError, StopIteration, zipfile.BadZipFile):
        return None


def why_not() -> str | None:
    """Why :func:`module` answers None (None: it does not, or it is being built)."""
    return _failed


def paths() -> tuple[Path, Path, Path]:
    """The module, its failure record and its build lock in the kernel cache."""
    h = hashlib.sha256(SOURCE.read_bytes())
    for part in (torch.__version__, sys.version, platform.machine(), _compiler()):
        h.update(part.encode())
    key = "native-" + h.hexdigest()[:24]
    d = aot.kernel_dir()
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    return d / f"{key}{suffix}", d / f"{key}.failed", d / f"{key}.lock"


def _compiler() -> str:
    return os.environ.get("CXX", "c++")


def _load(path: Path) -> ModuleType | None:
    global _module, _failed
    try:
        loader = importlib.machinery.ExtensionFileLoader("descent_native", str(path))
        spec = importlib.util.spec_from_loader("descent_native", loader)
        assert spec is not None
        mod = importlib.util.module_from_spec(spec)
        loader.exec_module(mod)
    except Exception as exc:  # (a file another torch built under our key, a broken file)
        _failed = f"could not load {path}: {exc}"
        return None
    _module = mod
    return mod


def _in_background() -> None:
    global _failed
    try:
        compile_module()
    except Exception as exc:  # (the cache not writable …): the Python path, for this process
        _failed = f"could not build: {exc}"


def compile_module() -> bool:
    """Compile the module into the cache (unless it is there or failed before) under its
    lock; a failure is recorded there. True when the module is in the cache. The
    compiler's process renames its output into place itself, so a build this process
    does not live to see the end of still lands."""
    path, failed, lock = paths()
    with aot.locked(lock):
        if path.exists() or failed.exists():
            return path.exists()
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        script = " || ".join(  # (newer torch headers need C++20)
            f"({shlex.join(_command(std, tmp))} && mv -f {shlex.quote(str(tmp))} {shlex.quote(str(path))})"
            for std in ("c++20", "c++17")
        )
        try:
            done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=900)
            why = f"the C++ compiler failed (exit status {done.returncode}):\n{done.stderr[-4000:]}"
        except (OSError, subprocess.SubprocessError) as exc:  # no shell, a compiler that hangs
            why = f"the C++ compiler could not run: {exc}"
        if not path.exists():
            tmp.unlink(missing_ok=True)
            failed.write_text(f"{WHAT}\n{why}")
        return path.exists()


def _command(std: str, out: Path) -> list[str]:
    from torch.utils import cpp_extension

    libs = cpp_extension.library_paths()
    cmd = ["nice", "-n", "10"] if shutil.which("nice") else []
    return [
        *cmd,
        _compiler(),
        "-O2",
        "-shared",
        "-fPIC",
        f"-std={std}",
        "-w",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        *[f"-I{p}" for p in cpp_extension.include_paths()],
        f"-I{sysconfig.get_paths()['include']}",
        str(SOURCE),
        "-o",
        str(out),
        *[f"-L{p}" for p in libs],
        *[f"-Wl,-rpath,{p}" for p in libs],
        "-ltorch",
        "-ltorch_cpu",
        "-lc10",
        "-ltorch_python",
    ]
