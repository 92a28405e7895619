"""Loads the optional compiled extension (the C++ kernels in ``csrc/``), building it once.

The build is a one-time JIT build with ``torch.utils.cpp_extension.load`` (ninja) into a build
directory of its own per torch version, Python version and CPU capability, so a new torch
gets a fresh build instead of a crash. What happens is printed to stderr.

Failure modes handled:
- a build killed midway: the build holds an OS file lock (``fcntl.flock``), which the kernel
  releases when the process dies, so no later import waits on a stale lock; a directory
  without a completed-build stamp is wiped and built again. ``torch.utils.cpp_extension``'s
  own ``lock`` file, which a killed build leaves behind and which makes later builds wait
  forever, is removed while we hold our lock (no one else can be building then).
- no compiler / no ninja: no build is tried; the reason is returned (one warning, Python backend).
- a failed build: its log is kept and the failure recorded for these sources, so later
  imports do not retry a doomed two-minute build; ``backend_info(build=True)`` retries.
- a library that no longer loads (e.g. torch upgraded in place): rebuilt once.

Environment: ``TORCH_BP_BUILD_DIR`` (where to build), ``TORCH_BP_BUILD_TIMEOUT`` (seconds to
wait for another process's build, default 1800).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

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


class _FileLock:
    """An exclusive OS lock on ``path`` (released by the kernel if the holder dies)."""

    def __init__(self, path: Path, timeout: float):
        self.path, self.timeout, self.fd = path, timeout, None

    def __enter__(self):
        import fcntl

        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline, told = time.monotonic() + self.timeout, False
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.ftruncate(self.fd, 0)
                os.write(self.fd, f"{os.getpid()}\n".encode())
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise TimeoutError(f"another process has been building in {self.path.parent} for over "
                                       f"{self.timeout:.0f} s (TORCH_BP_BUILD_TIMEOUT)")
                if not told:
                    _say(f"waiting for another process's build of the C++ kernels ({self.path.parent})")
                    told = True
                time.sleep(0.5)

    def __exit__(self, *exc):
        import fcntl

        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _read_json(p: Path) -> dict:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


_loaded: str | None = None  # path of the library loaded in this process


def load(build: bool = True, force: bool = False) -> tuple[str | None, str]:
    """Load the compiled kernels, building them first if needed and ``build``.

    Returns ``(library path, "")`` on success, ``(None, reason)`` otherwise. ``force`` retries
    a build that failed before for the same sources.
    """
    global _loaded
    with _LOCK:
        if _loaded:
            return _loaded, ""
        if CSRC is None:
            return None, "the C++ sources (csrc/) are not installed with this copy of torch_bp"
        if sys.platform == "win32":
            return None, "the compiled backend is built on Linux and macOS only"
        d = build_dir()
        lib, stamp, failed = d / f"{NAME}.so", d / "stamp.json", d / "failed.json"
        want = sources_hash()
        if _read_json(stamp).get("hash") == want and lib.is_file():
            try:
                torch.ops.load_library(str(lib))
                _loaded = str(lib)
                return _loaded, ""
            except OSError as e:  # e.g. torch replaced in place: rebuild below
                if not build:
                    return None, f"the built library does not load ({e}); rebuild with torch_bp.backend_info(build=True)"
                _say(f"the built library does not load ({e}); rebuilding")
        if not build:
            return None, f"the C++ kernels are not built yet for these sources ({d})"
        prev = _read_json(failed)
        if prev.get("hash") == want and not force:
            return None, (f"the build failed before for these sources (log: {d / 'build.log'}); "
                          "retry with torch_bp.backend_info(build=True)")
        if _compiler() is None:
            return None, f"no C++ compiler found (looked for {os.environ.get('CXX', 'c++')!r}; set CXX)"
        try:
            from torch.utils.cpp_extension import verify_ninja_availability

            verify_ninja_availability()
        except RuntimeError:
            return None, "ninja is not installed (pip install ninja, or the dev extra: pip install -e '.[dev]')"
        d.mkdir(parents=True, exist_ok=True)
        try:
            with _FileLock(d.parent / f"{d.name}.lock", float(os.environ.get("TORCH_BP_BUILD_TIMEOUT", 1800))):
                return _build_locked(d, lib, stamp, failed, want)
        except TimeoutError as e:
            return None, str(e)


def _build_locked(d: Path, lib: Path, stamp: Path, failed: Path, want: str) -> tuple[str | None, str]:
    global _loaded
    if _read_json(stamp).get("hash") == want and lib.is_file():  # built while we waited
        torch.ops.load_library(str(lib))
        _loaded = str(lib)
        return _loaded, ""
    # No completed build for these sources: start clean (objects of a killed build, the
    # stale cpp_extension `lock` file, an old library).
    for p in d.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    _say(f"building the C++ kernels (csrc/, one time per torch version, about 1-3 min) in {d}")
    t0 = time.monotonic()
    try:
        _compile(d)
        if not lib.is_file():  # cpp_extension names a second build in one process NAME_v1
            next(d.glob(f"{NAME}_v*.so")).rename(lib)
    except Exception as e:  # compiler error, killed compiler, ...
        log = d / "build.log"
        log.write_text(str(e))
        failed.write_text(json.dumps({"hash": want, "time": time.time()}))
        last = [ln for ln in str(e).splitlines() if "error" in ln.lower()][:3] or str(e).splitlines()[-3:]
        return None, f"the C++ build failed (log: {log}): " + " | ".join(last)[:500]
    torch.ops.load_library(str(lib))
    stamp.write_text(json.dumps({"hash": want, "torch": torch.__version__, "cflags": cflags(),
                                 "seconds": round(time.monotonic() - t0, 1)}))
    _say(f"built {lib.name} in {time.monotonic() - t0:.0f} s")
    _loaded = str(lib)
    return _loaded, ""


def _compile(d: Path) -> None:
    """Compile csrc/ (one translation unit) into ``d / NAME.so`` with torch's JIT builder."""
    from torch.utils.cpp_extension import load as cpp_load

    cpp_load(name=NAME, sources=[str(CSRC / "torch_bp.cpp")], extra_cflags=cflags(), extra_ldflags=["-fopenmp"],
             build_directory=str(d), is_python_module=False, verbose=False)
