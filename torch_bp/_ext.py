"""Loads the optional compiled extension (the C++ kernels in ``csrc/``); builds it on request.

Importing torch_bp never compiles: :func:`load` with ``build=False`` (what ``"auto"`` does at
import) loads a library built before, or says why not. A build happens only on request:
``python -m torch_bp.build``, ``torch_bp.backend_info(build=True)`` (``scripts/setup.sh``
calls it) or ``TORCH_BP_BACKEND=cpp`` / ``set_backend("cpp")`` ("compiled or error"). It is a
JIT build with ``torch.utils.cpp_extension.load`` (ninja), run in a child process, into a
build directory of its own per torch version, Python version and CPU capability, so a new
torch gets a fresh build instead of a crash. What happens is printed to stderr, one line each.

Failure modes handled:
- a damaged cache (a truncated or overwritten library under a valid stamp): the stamp records
  the library's size and SHA-256, checked before the library is mapped, so a bad file is never
  loaded (no OSError, no SIGBUS); at import the Python rules run after one warning, a build
  request rebuilds once.
- a library that loads but lacks ops the backend calls: not used (one warning); a process
  cannot load a second copy of the ops, so the next build request rebuilds it.
- a library that no longer loads (e.g. torch replaced in place): rebuilt once on request.
- a compile that hangs: killed after ``TORCH_BP_BUILD_TIMEOUT`` seconds (default 600). The
  compile runs in a process group of its own under a watchdog that kills it when the process
  that asked for it dies, so a killed importer leaves no compiler running.
- a build killed midway: the build holds an OS file lock (``filelock``), which the kernel
  releases when the process dies, so no later build waits on a stale lock; a directory without
  a completed-build stamp is wiped and built again (``torch.utils.cpp_extension``'s own
  ``lock`` file, which a killed build leaves behind, with it). Another process's build is
  waited for up to the compile timeout plus a minute, then given up with the reason.
- no compiler / no ninja: no build is tried; the reason is returned.
- a failed build: its log is kept and the failure recorded for these sources, so a later
  import says so (one warning) and a later ``backend_info(build=True)`` retries.

Environment: ``TORCH_BP_BUILD_DIR`` (where to build), ``TORCH_BP_BUILD_TIMEOUT`` (seconds one
compile may run, default 600).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

import filelock
import torch

NAME = "torch_bp_C"
_PKG = Path(__file__).resolve().parent
# csrc/ sits beside the package in a source checkout (editable install), inside it in a wheel
# (torch_bp/csrc is a link to ../csrc, which setuptools follows when it builds the wheel).
CSRC = next((p for p in (_PKG.parent / "csrc", _PKG / "csrc") if (p / "torch_bp.cpp").is_file()), None)
_LOCK = threading.Lock()


def _capability() -> str:
    try:
        return torch.backends.cpu.get_cpu_capability()
    except Exception:  # pragma: no cover - very old torch or unusual platform
        return "DEFAULT"


# Compile for the vector ISA torch itself dispatches to on this machine.
_ISA_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c"],
    "AVX2": ["-mavx2", "-mfma", "-mf16c"],
}


def cflags() -> list[str]:
    cap = _capability()
    flags = ["-O3", "-fopenmp", "-DNDEBUG"]
    if cap in _ISA_FLAGS and sys.platform.startswith("linux"):
        flags += [f"-DCPU_CAPABILITY={cap}", f"-DCPU_CAPABILITY_{cap}"] + _ISA_FLAGS[cap]
    return flags


def _tag() -> str:
    v = torch.__version__.replace("+", "_")
    return f"torch{v}-py{sys.version_info[0]}{sys.version_info[1]}-{_capability().lower()}"


def build_dir() -> Path:
    env = os.environ.get("TORCH_BP_BUILD_DIR")
    if env:
        return Path(env) / _tag()
    if CSRC is not None and CSRC.parent == _PKG.parent and os.access(CSRC.parent, os.W_OK):
        return CSRC.parent / "build" / "torch_bp_ext" / _tag()  # a source checkout
    return Path.home() / ".cache" / "torch_bp" / _tag()


def _sources() -> list[Path]:
    return sorted(p for p in CSRC.rglob("*") if p.suffix in (".cpp", ".h") and p.is_file())


def sources_hash() -> str:
    h = hashlib.sha256()
    for p in _sources():
        h.update(str(p.relative_to(CSRC)).encode())
        h.update(p.read_bytes())
    h.update(" ".join(cflags()).encode())
    h.update(torch.__version__.encode())
    return h.hexdigest()[:16]


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "c++"))


def _say(msg: str) -> None:
    print(f"torch_bp: {msg}", file=sys.stderr, flush=True)


BUILD_HINT = "python -m torch_bp.build (or torch_bp.backend_info(build=True))"


def build_timeout() -> float:
    """Seconds one compile may run (``TORCH_BP_BUILD_TIMEOUT``, default 600)."""
    return float(os.environ.get("TORCH_BP_BUILD_TIMEOUT", 600))


def wait_timeout() -> float:
    """Seconds to wait for another process's build: its compile timeout plus a minute."""
    return build_timeout() + 60


class LoadResult(NamedTuple):
    library: str | None  # the loaded library, or None
    reason: str          # why not, when it is None
    broken: bool         # something is wrong (damaged cache, failed build, missing ops), not merely unbuilt


def _read_json(p: Path) -> dict:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def _digest(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check(lib: Path, stamp: Path, want: str) -> tuple[str, str]:
    """("ok" | "missing" | "damaged", what is wrong): the library against its stamp."""
    s = _read_json(stamp)
    if s.get("hash") != want:
        return "missing", ""
    if "sha256" not in s or "size" not in s:
        return "damaged", "its stamp has no checksum"
    try:
        size = lib.stat().st_size
    except OSError:
        return "damaged", "the library file is missing"
    if size != s["size"]:
        return "damaged", f"{size} bytes, built as {s['size']}"
    if _digest(lib) != s["sha256"]:
        return "damaged", "its SHA-256 differs from the build's"
    return "ok", ""


_loaded: str | None = None  # path of the library loaded in this process
_unusable: str = ""         # set when a loaded library lacks ops: no other copy can load in this process


def _missing(required_ops) -> list[str]:
    ns = torch.ops.torch_bp
    return [op for op in required_ops if not hasattr(ns, op)]


def load(build: bool = False, force: bool = False, required_ops=()) -> LoadResult:
    """Load the compiled kernels; with ``build``, build them first if they are missing or damaged.

    ``force`` retries a build that failed before for the same sources. ``required_ops``: the
    ``torch.ops.torch_bp`` ops the caller needs; a library without one of them is not used.
    """
    global _loaded
    with _LOCK:
        if _unusable:
            return LoadResult(None, _unusable, True)
        if _loaded:
            return _usable(_loaded, required_ops)
        if CSRC is None:
            return LoadResult(None, "the C++ sources (csrc/) are not installed with this copy of torch_bp", False)
        if sys.platform == "win32":
            return LoadResult(None, "the compiled backend is built on Linux and macOS only", False)
        d = build_dir()
        lib, stamp, failed = d / f"{NAME}.so", d / "stamp.json", d / "failed.json"
        want = sources_hash()
        state, what = _check(lib, stamp, want)
        if state == "ok":
            res = _load_checked(lib, required_ops)
            if res.library or not build or _unusable:
                return res
            _say(f"{res.reason}; rebuilding")
        if not build:
            if state == "damaged":
                return LoadResult(None, f"the built library in {d} is damaged ({what}); rebuild: {BUILD_HINT}", True)
            if _read_json(failed).get("hash") == want:
                return LoadResult(None, f"the C++ build failed for these sources (log: {d / 'build.log'}); "
                                        f"retry: {BUILD_HINT}", True)
            return LoadResult(None, f"the C++ kernels are not built for this torch and these sources ({d}); "
                                    f"build them: {BUILD_HINT}", False)
        if _read_json(failed).get("hash") == want and not force:
            return LoadResult(None, f"the build failed before for these sources (log: {d / 'build.log'}); "
                                    "retry with torch_bp.backend_info(build=True)", True)
        if _compiler() is None:
            return LoadResult(None, f"no C++ compiler found (looked for {os.environ.get('CXX', 'c++')!r}; set CXX)",
                              True)
        try:
            from torch.utils.cpp_extension import verify_ninja_availability

            verify_ninja_availability()
        except RuntimeError:
            return LoadResult(None, "ninja is not installed (pip install ninja, or the dev extra: "
                                    "pip install -e '.[dev]')", True)
        d.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(d.parent / f"{d.name}.lock"))
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            _say(f"waiting for another process's build of the C++ kernels ({d})")
            try:
                lock.acquire(timeout=wait_timeout())
            except filelock.Timeout:
                return LoadResult(None, f"another process has been building in {d} for over {wait_timeout():.0f} s "
                                        "(its compile timeout, TORCH_BP_BUILD_TIMEOUT, plus a minute)", True)
        try:
            return _build_locked(d, lib, stamp, failed, want, required_ops, rebuild=state == "ok")
        finally:
            lock.release()


def _usable(path: str, required_ops) -> LoadResult:
    missing = _missing(required_ops)
    if missing:
        return LoadResult(None, f"the compiled library {path} lacks the ops {missing}; rebuild: {BUILD_HINT}", True)
    return LoadResult(path, "", False)


def _load_checked(lib: Path, required_ops) -> LoadResult:
    """Map a library whose checksum was verified; check it provides ``required_ops``."""
    global _loaded, _unusable
    try:
        torch.ops.load_library(str(lib))
    except OSError as e:  # e.g. torch replaced in place: the library's symbols no longer resolve
        return LoadResult(None, f"the built library does not load ({e}); rebuild: {BUILD_HINT}", True)
    _loaded = str(lib)
    res = _usable(_loaded, required_ops)
    if res.library is None:
        # Its ops are registered in this process now; a rebuilt copy could not register them
        # again here. Drop the stamp so that the next build request (in any process) rebuilds.
        _unusable = res.reason
        (lib.parent / "stamp.json").unlink(missing_ok=True)
    return res


def _build_locked(d: Path, lib: Path, stamp: Path, failed: Path, want: str, required_ops,
                  rebuild: bool) -> LoadResult:
    if not rebuild and _check(lib, stamp, want)[0] == "ok":  # built while we waited
        return _load_checked(lib, required_ops)
    # No usable build for these sources: start clean (objects of a killed build, the stale
    # cpp_extension `lock` file, a damaged or old library).
    for p in d.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    _say(f"building the C++ kernels (one time per torch version, about 1-3 min, timeout "
         f"{build_timeout():.0f} s) in {d}")
    t0 = time.monotonic()
    try:
        _compile(d)
        if not lib.is_file():
            raise RuntimeError(f"the build produced no {lib.name}")
    except Exception as e:  # compiler error, timeout, killed compiler, ...
        log = d / "build.log"
        with open(log, "a") as f:
            f.write(f"\n{e}\n")
        failed.write_text(json.dumps({"hash": want, "time": time.time()}))
        last = [ln for ln in str(e).splitlines() if "error" in ln.lower()][:3] or str(e).splitlines()[-3:]
        return LoadResult(None, f"the C++ build failed (log: {log}): " + " | ".join(last)[:500], True)
    tmp = stamp.with_suffix(".tmp")
    tmp.write_text(json.dumps({"hash": want, "torch": torch.__version__, "cflags": cflags(),
                               "seconds": round(time.monotonic() - t0, 1), "size": lib.stat().st_size,
                               "sha256": _digest(lib)}))
    os.replace(tmp, stamp)
    _say(f"built {lib.name} in {time.monotonic() - t0:.0f} s")
    return _load_checked(lib, required_ops)


# The compile runs as: watchdog -> python (cpp_extension.load) -> ninja -> compiler. The
# watchdog leads a process group of its own; it exits with the build's status, and kills the
# group when the process that started it is gone (its parent pid changes).
_WATCHDOG = """
import os, signal, subprocess, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a group-wide SIGTERM is for the build, not for us
parent = int(sys.argv[1])
child = subprocess.Popen(sys.argv[2:])
while True:
    try:
        sys.exit(child.wait(timeout=0.5))
    except subprocess.TimeoutExpired:
        pass
    if os.getppid() != parent:
        os.killpg(0, signal.SIGTERM)  # ninja passes it on to the compilers' own process groups
        try:
            child.wait(timeout=5)
        finally:
            os.killpg(0, signal.SIGKILL)
"""

_BUILDER = """
import json, sys
from torch.utils.cpp_extension import load
a = json.loads(sys.argv[1])
load(name=a["name"], sources=a["sources"], extra_cflags=a["cflags"], extra_ldflags=["-fopenmp"],
     build_directory=a["dir"], is_python_module=False, verbose=True)
"""


def _stop_group(p: subprocess.Popen) -> None:
    """SIGTERM the build's process group (ninja stops its compilers), then SIGKILL what is left."""
    try:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


def run_killable(cmd: list[str], timeout: float, log: Path) -> None:
    """Run ``cmd`` (output to ``log``) under the watchdog; kill its whole tree after ``timeout``
    seconds, on an exception here (e.g. KeyboardInterrupt), or when this process dies."""
    with open(log, "ab") as out:
        p = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), *cmd], stdout=out,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop_group(p)
            raise TimeoutError(f"the compile ran over {timeout:.0f} s (TORCH_BP_BUILD_TIMEOUT) and was stopped")
        except BaseException:
            _stop_group(p)
            raise
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-40:]
        raise RuntimeError(f"the build exited with status {rc}:\n" + "\n".join(tail))


def _compile(d: Path) -> None:
    """Compile csrc/ (one translation unit) into ``d / NAME.so`` with torch's JIT builder, in a
    child process (which also loads the result once: a library that does not load fails here)."""
    args = {"name": NAME, "sources": [str(CSRC / "torch_bp.cpp")], "cflags": cflags(), "dir": str(d)}
    run_killable([sys.executable, "-c", _BUILDER, json.dumps(args)], build_timeout(), d / "build.log")
