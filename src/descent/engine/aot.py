"""Ahead-of-time compiled step kernels: built once per machine, loaded in milliseconds.

A kernel is one rule chain, with its static settings and the layout of its scalar
tensor, lowered by AOTInductor to a shared library over 1-D buffers of any length and
packaged as ``<digest>.pt2`` in the cache directory. The digest covers everything the
code depends on: the chain's structure, the source files of every transform in it,
descent's and torch's versions, the dtype and the machine (CPU instruction set, or GPU
architecture). A later process loads the package without tracing or compiling anything.

Packages are built by a background process (:func:`main`), one at a time and niced, so
training goes on meanwhile. Each is built under a file lock and renamed into place when
complete: concurrent processes never read half a file and never build the same kernel
twice. A build that fails leaves ``<digest>.failed`` with
the reason (``descent cache clear`` forgets it).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime
import functools
import hashlib
import inspect
import json
import os
import pickle
import platform
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..rules import base as rules_base
from ..rules.base import Chain
from . import body as step_body
from . import formats as state_formats
from .body import Step, Windows, options
from .formats import BLOCK, Format, StoredStep

#: Where kernels go: ``$DESCENT_CACHE_DIR``, else ``$XDG_CACHE_HOME/descent``, else
#: ``~/.cache/descent``.
CACHE_ENV = "DESCENT_CACHE_DIR"


def cache_root() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "descent"


def background_builds() -> bool:
    """``DESCENT_BUILD=0`` stops ``compile="auto"`` from starting builds (cached kernels
    are still used; ``compile=True`` still builds what it needs)."""
    return os.environ.get("DESCENT_BUILD", "1").strip().lower() not in ("0", "false", "no", "off")


def kernel_dir() -> Path:
    return cache_root() / "kernels"


def available() -> bool:
    """Whether this torch can build and load AOTInductor packages."""
    aoti = getattr(torch._C, "_aoti", None)
    return aoti is not None and hasattr(aoti, "AOTIModelPackageLoader")


# -- what a kernel is -------------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    """Everything that decides a kernel's code."""

    chain: Chain
    statics: tuple
    names: tuple
    dtype: torch.dtype
    device: str  # "cpu" or "cuda"
    #: the kernel leaves everything as it was when the gradient holds an inf or NaN, and
    #: returns whether it did (``skip_nonfinite``)
    guard: bool = False
    #: how the state is stored and the params rounded (None: the params' dtype, nearest)
    fmt: Format | None = None
    #: the kernel steps this many windows per call (:class:`.body.Windows`); 0: one
    windows: int = 0

    @property
    def state(self) -> tuple[str, ...]:
        return self.chain.state

    def describe(self) -> str:
        kinds = "+".join(type(t).__name__ for t in self.chain.transforms[1:-1]) or "plain"
        fmt = f" {self.fmt.describe()}" if self.fmt is not None else ""
        windows = f" x{self.windows} windows" if self.windows else ""
        return f"{kinds} {str(self.dtype).removeprefix('torch.')}{fmt}{windows} {self.device}"


# -- names ------------------------------------------------------------------------------
class Uncacheable(Exception):
    """The chain's code cannot be pinned down by its source files."""


def digest(spec: Spec) -> str:
    """The package name: a digest of everything the kernel's code depends on."""
    from .._version import __version__

    parts = (
        "descent",
        __version__,
        torch.__version__,
        getattr(torch.version, "git_version", ""),
        machine(spec.device),
        str(spec.dtype),
        _stable(spec.chain.key),
        repr(spec.statics),
        repr(spec.names),
        *(("guard",) if spec.guard else ()),
        *_sources(tuple(type(t) for t in spec.chain.transforms)),
        *((repr(spec.fmt), _source_hash(state_formats.__file__)) if spec.fmt is not None else ()),
        *((f"windows={spec.windows}", "nowait") if spec.windows else ()),
    )
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def _stable(obj: Hashable) -> str:
    """A repr that is the same in every process (functions by qualified name)."""
    if isinstance(obj, tuple):
        return "(" + ",".join(_stable(x) for x in obj) + ")"
    if callable(obj):
        return f"<{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', '?')}>"
    return repr(obj)


@functools.cache
def _sources(classes: tuple[type, ...]) -> tuple[str, ...]:
    files = {inspect.getsourcefile(rules_base), inspect.getsourcefile(step_body)}
    for cls in classes:
        for klass in cls.__mro__:
            if klass is object:
                continue
            try:
                source = inspect.getsourcefile(klass)
            except TypeError:
                source = None
            if not source or not os.path.exists(source):
                raise Uncacheable(f"{klass.__qualname__} has no source file")
            files.add(source)
    # the text, not the syntax tree: hashing bytes costs microseconds, parsing ~10 ms a
    # file, paid by every process's first step
    return tuple(hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in sorted(files))


@functools.cache
def _source_hash(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@functools.cache
def machine(device: str) -> str:
    """What compiled code for ``device`` depends on."""
    if device == "cuda":
        major, minor = torch.cuda.get_device_capability()
        return f"cuda-sm{major}{minor}-{torch.version.cuda}"
    flags = platform.processor()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:  # the first CPU's flags: stop there (the file lists every core)
            if line.startswith(("flags", "Features")):
                flags = " ".join(sorted(line.split(":", 1)[1].split()))
                break
    return f"{platform.system()}-{platform.machine()}-{hashlib.sha256(flags.encode()).hexdigest()[:12]}"


def portable(chain: Chain) -> Chain:
    """A copy of ``chain`` that pickles: hyperparameter functions (read on the host,
    never in the kernel) are replaced by their names."""
    import copy

    clone = copy.copy(chain)
    transforms = []
    for t in chain.transforms:
        t = copy.copy(t)
        for k, v in vars(t).items():
            if callable(v):
                setattr(t, k, _stable(v))
        transforms.append(t)
    clone.transforms = tuple(transforms)
    return clone


def importable(chain: Chain) -> bool:
    """Whether another process can unpickle the chain's transforms."""
    return all(
        type(t).__module__ != "__main__" and "<locals>" not in type(t).__qualname__ for t in chain.transforms
    )


# -- build and load ---------------------------------------------------------------------
def build(spec: Spec, dest: Path) -> float:
    """Export ``spec``'s kernel and compile it with AOTInductor into ``dest``; seconds."""
    from torch._inductor import aoti_compile_and_package

    start = time.perf_counter()
    device = torch.device(spec.device)
    n = 64 if spec.fmt is None else 4 * BLOCK
    scal_dtype = torch.float64 if spec.dtype == torch.float64 else torch.float32
    count = sum(len(k) for k in spec.names)
    args = (
        torch.ones(n, dtype=spec.dtype, device=device),
        torch.ones(n, dtype=spec.dtype, device=device),
        torch.ones(count, dtype=scal_dtype, device=device),
        [torch.ones(n, dtype=spec.dtype, device=device) for _ in spec.state],
    )
    size = torch.export.Dim("n", min=2)
    shapes: tuple = ({0: size}, {0: size}, None, [{0: size} for _ in spec.state])
    if spec.fmt is not None:
        args, shapes = _format_args(spec, args, size)
    if spec.windows:
        args, shapes = _windows_args(spec, args)
    tmp = dest.with_name(f"{dest.stem}.{os.getpid()}.tmp.pt2")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # torch's own deprecation notices from inside export, not about this code
            warnings.filterwarnings("ignore", category=FutureWarning)
            module = Windows(spec) if spec.windows else Step(spec) if spec.fmt is None else StoredStep(spec)
            program = torch.export.export(module, args, dynamic_shapes=shapes)
            with state_formats.full_width(), unsynced(spec.windows) as loops:
                aoti_compile_and_package(program, package_path=str(tmp), inductor_configs=options())
            if loops and loops[0] != spec.windows:  # not a loop a window: built as inductor writes it
                with state_formats.full_width():
                    aoti_compile_and_package(program, package_path=str(tmp), inductor_configs=options())
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return time.perf_counter() - start


@contextlib.contextmanager
def unsynced(windows: int) -> Iterator[list[int]]:
    """While a windows kernel is generated: its parallel loops without the barrier that
    ends each (``#pragma omp for nowait``). A window's loop reads and writes only that
    window's memory, and the windows are disjoint, so a thread done with its share of one
    window goes on to the next; the parallel region's end still joins them. Measured on
    the 2-core machine (2026-12-02), Adam with fresh gradients: 611 K params 355 → 341 µs
    a step, 2.4 M 910 → 854 µs (15 barriers a call saved). Yields a list that holds, after the build, the
    number of parallel loops written: safe only when it is one a window (a window whose
    rule needs a second loop, over a temporary the first wrote, must keep its barriers;
    :func:`build` then builds again without). ``windows == 0`` or another inductor: no
    change."""
    count: list[int] = []
    try:
        from torch._inductor.codegen import cpp
    except ImportError:
        yield count
        return
    level = getattr(cpp, "LoopLevel", None)
    if not windows or level is None or "lines" not in vars(level):
        yield count
        return
    lines = vars(level)["lines"]
    count.append(0)

    def unsynced_lines(self):
        out = lines(self)
        if out and out[0].startswith("#pragma omp for"):
            count[0] += 1
            out = [out[0].replace("#pragma omp for", "#pragma omp for nowait", 1), *out[1:]]
        return out

    level.lines = unsynced_lines
    try:
        yield count
    finally:
        level.lines = lines


def _format_args(spec: Spec, args: tuple, size) -> tuple[tuple, tuple]:
    """Example inputs and their dynamic sizes for a kernel on state kept in ``spec.fmt``:
    ``(p, g, scal, bufs, key)``, 8-bit buffers as codes and block scales."""
    p, g, scal, _ = args
    n = p.shape[0]
    dtype = state_formats.storage_dtype(spec.fmt, spec.dtype)
    bufs, dims = [], []
    blocks = torch.export.Dim("blocks", min=1)
    eight = state_formats.slots(spec.fmt) == 2
    if eight:  # 8-bit runs are whole blocks (see grads.piece), p and g as rows of a block
        size = BLOCK * blocks
        p, g = p.view(-1, BLOCK), g.view(-1, BLOCK)
    for _ in spec.state:
        bufs.append(torch.zeros(n, dtype=dtype, device=p.device))
        dims.append({0: size})
        if eight:
            bufs.append(torch.ones(n // BLOCK, dtype=torch.float32, device=p.device))
            dims.append({0: blocks})
    key = torch.zeros(2, dtype=torch.int32, device=p.device)
    rows = {0: blocks} if eight else {0: size}
    return (p, g, scal, bufs, key), (rows, rows, None, dims, None)


def _windows_args(spec: Spec, args: tuple) -> tuple[tuple, tuple]:
    """Example inputs and their dynamic sizes for a kernel of ``spec.windows`` windows:
    ``(ps, gs, scal, bufs)``, every window a length of its own (examples of different
    lengths, so that none is taken to equal another)."""
    p, _, scal, _ = args
    k, m = spec.windows, len(spec.state)
    dims = [torch.export.Dim(f"n{i}", min=2) for i in range(k)]

    def like(i: int) -> torch.Tensor:
        return torch.ones(64 + 16 * i, dtype=p.dtype, device=p.device)

    ps, gs = [like(i) for i in range(k)], [like(i) for i in range(k)]
    bufs = [like(i) for i in range(k) for _ in range(m)]
    shapes = ([{0: d} for d in dims], [{0: d} for d in dims], None, [{0: d} for d in dims for _ in range(m)])
    return (ps, gs, scal, bufs), shapes


def load(path: Path, device: torch.device):
    """The package's runner: ``runner.run([p, g, scal, *bufs])`` steps in place."""
    index = -1 if device.type == "cpu" else (device.index if device.index is not None else -1)
    try:
        return torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, index)
    except TypeError:  # another torch's signature: the public loader, slower to import
        from torch._inductor import aoti_load_package

        return aoti_load_package(str(path), device_index=index).loader


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` across processes (where the OS has flock)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock: atomic renames still keep files whole
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def paths(key: str) -> tuple[Path, Path, Path]:
    d = kernel_dir()
    return d / f"{key}.pt2", d / f"{key}.failed", d / f"{key}.lock"


def build_once(key: str, spec: Spec, log=None) -> bool:
    """Build ``key`` unless it exists or failed before; True when the package exists."""
    pt2, failed, lock = paths(key)
    with locked(lock):
        if pt2.exists():
            return True
        if failed.exists():
            return False
        try:
            seconds = build(spec, pt2)
        except Exception as exc:  # a compiler missing or failing: recorded, not retried
            failed.write_text(f"{spec.describe()}\n{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}")
            if log:
                log(f"failed {key} ({spec.describe()}): {type(exc).__name__}: {exc}")
            return False
        meta = {
            "kernel": spec.describe(),
            "chain": repr(spec.chain),
            "statics": repr(spec.statics),
            "seconds": round(seconds, 2),
            "torch": torch.__version__,
            "machine": machine(spec.device),
            "built": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        pt2.with_suffix(".json").write_text(json.dumps(meta, indent=1))
        if log:
            log(f"built {key} ({spec.describe()}) in {seconds:.1f} s")
        return True


# -- the background builder -------------------------------------------------------------
class Builder:
    """Sends kernels to build to one background process at a time."""

    def __init__(self) -> None:
        self.queue: dict[str, Spec] = {}
        self.sent: set[str] = set()
        self.proc: subprocess.Popen | None = None
        atexit.register(self._detach)

    def _detach(self) -> None:
        # A build still running at exit is left to finish (it runs in its own session and
        # the next process loads its kernel); marking it reaped keeps Popen from warning.
        if self.proc is not None and self.proc.poll() is None:
            self.proc.returncode = 0

    def request(self, key: str, spec: Spec) -> None:
        if key not in self.sent and key not in self.queue:
            self.queue[key] = spec
        self.poll()

    def poll(self) -> bool:
        """Start the next batch when idle; True while a build is running or queued."""
        if self.proc is not None and self.proc.poll() is not None:
            self.proc = None
        if self.proc is None and self.queue:
            batch = [(k, dataclasses.replace(s, chain=portable(s.chain))) for k, s in self.queue.items()]
            self.sent.update(self.queue)
            self.queue.clear()
            self.proc = _spawn(pickle.dumps(batch))
        return self.proc is not None

    def running(self, key: str) -> bool:
        """Whether ``key`` is queued or its batch is still being built."""
        return self.poll() and (key in self.sent or key in self.queue)


def _spawn(payload: bytes) -> subprocess.Popen:
    d = kernel_dir()
    d.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        "TORCHINDUCTOR_COMPILE_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }
    with open(d / "build.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from descent.engine.aot import main; sys.exit(main())"],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a build finishes even if the training script ends
        )
    assert proc.stdin is not None
    proc.stdin.write(payload)
    proc.stdin.close()
    return proc


builder = Builder()


def main() -> int:
    """Builder process: unpickle ``[(key, spec), …]`` from stdin and build each."""
    with contextlib.suppress(OSError, AttributeError):
        os.nice(10)
    batch = pickle.loads(sys.stdin.buffer.read())

    def log(msg: str) -> None:
        print(f"{datetime.datetime.now().isoformat(timespec='seconds')} [{os.getpid()}] {msg}", flush=True)

    for key, spec in batch:
        build_once(key, spec, log)
    return 0
