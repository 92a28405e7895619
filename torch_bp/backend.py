"""Which backend runs the rules: the Python rules of ``torch_bp.ops`` or the compiled kernels.

The Python rules are the specification and always available. The compiled backend
(``csrc/``, registered as ``torch.ops.torch_bp.*``) runs the same rules as fused CPU kernels;
a Function calls them when :func:`use_cpp` says so for its tensors, and falls back to its
Python rule otherwise.

One switch: the environment variable ``TORCH_BP_BACKEND`` (read at import) or
:func:`set_backend`, with the values

- ``"auto"`` (default): the compiled kernels if they were built for this torch (never built
  on import: ``python -m torch_bp.build``, ``backend_info(build=True)`` or
  ``scripts/setup.sh`` build them), else the Python rules; silently when they are merely not
  built, after one warning when something is wrong (a damaged build, a failed build);
- ``"python"``: the Python rules only; nothing is loaded or built;
- ``"cpp"``: the compiled kernels, built now if needed, or an error saying why they are
  unavailable.

:func:`backend_info` says which backend runs and why the compiled one does not, if it does not.

The compiled kernels run for CPU tensors of dtype float32, float64 or bfloat16 (all of one
dtype), outside ``torch.func`` transforms (``vmap``, ``grad``, ...): there the Python rule
runs, since ``generate_vmap_rule`` vmaps the rule itself, and in a backward with
``create_graph=True`` (double backward differentiates the Python rule).

CUDA tensors: where a CUDA device and Triton are both present, the Triton kernels of
``torch_bp/kernels/triton/`` are registered as the ``CUDA`` implementation of the same ops
(:data:`CUDA_OPS`), for float32, bfloat16 and float16; a call site names its op
(``use_cpp(x, op="layer_norm_fwd")``) and runs it for CUDA tensors only if that op has a CUDA
kernel. Every other op, and every rule without Triton, runs the Python rule on CUDA. The CUDA
kernels run in the ``auto`` and ``cpp`` modes, never in ``python`` mode; their op schemas are the
compiled library's, or, in ``auto`` mode where the C++ kernels cannot be built (no compiler or
ninja on a GPU machine), the same schemas defined from ``csrc/ops.cpp``'s text.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch

from . import _compat, _ext

MODES = ("auto", "python", "cpp")
DTYPES = (torch.float32, torch.float64, torch.bfloat16)
CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def compiled_rules() -> dict[str, tuple[str, ...]]:
    """Rule class name -> the compiled ops it calls (each rule's ``compiled`` declaration)."""
    from .ops._rule import RULES
    return {cls.__name__: cls.compiled for cls in RULES if cls.compiled}


_mode = "python"
_cpp = False        # the compiled kernels are loaded and selected
_cuda = False       # the CUDA (Triton) kernels are registered and selected
_reason = ""        # why not, when they are not
_warned = False
CUDA_OPS: frozenset = frozenset()   # the ops with a CUDA kernel (Triton), once registered
_cuda_reason = "no CUDA device"     # why not, when there are none


@dataclass(frozen=True)
class BackendInfo:
    backend: str           # "cpp" or "python": what runs now
    requested: str         # the mode asked for ("auto", "python", "cpp")
    library: str | None    # the loaded extension, if any
    reason: str            # why the compiled backend is not running ("" when it is)
    cuda: str = ""         # the CUDA kernels: how many ops have one, or why there are none

    def __str__(self):
        if self.backend == "cpp":
            return (f"torch_bp backend: cpp (requested {self.requested!r}): compiled kernels from {self.library}, "
                    f"for CPU tensors of dtype float32/float64/bfloat16; {self.cuda}; the Python rules elsewhere")
        return f"torch_bp backend: python (requested {self.requested!r}): {self.reason}; {self.cuda}"


def backend_info(build: bool = False) -> BackendInfo:
    """Which backend runs, and why the compiled one does not if it does not.

    ``build=True`` builds the compiled kernels now if they are missing or damaged (retrying a
    build that failed before) and selects them when the mode is ``"auto"`` or ``"cpp"``.
    """
    global _cpp, _cuda, _reason
    if build:
        res = _ext.load(build=True, force=True, required_ops=_required_ops())
        if _mode != "python":
            _cpp, _reason = _select(res)
            if _cpp:
                _cuda = _register_cuda()
    cuda = (f"Triton kernels for CUDA tensors of {len(CUDA_OPS)} ops" if _cuda
            else "no CUDA kernels (python mode)" if _mode == "python" else f"no CUDA kernels ({_cuda_reason})")
    return BackendInfo("cpp" if _cpp else "python", _mode, _ext._loaded, _reason, cuda)


def set_backend(name: str) -> BackendInfo:
    """Select ``"auto"``, ``"python"`` or ``"cpp"`` (see the module docstring); returns :func:`backend_info`.

    ``"cpp"`` builds the compiled kernels if they are missing, and raises ``RuntimeError`` with
    the reason when they are unavailable. ``"auto"`` never builds.
    """
    global _mode, _cpp, _cuda, _reason, _warned
    if name not in MODES:
        raise ValueError(f"torch_bp backend must be one of {MODES}, got {name!r}")
    if name == "python":
        _mode, _cpp, _cuda, _reason = name, False, False, "selected (TORCH_BP_BACKEND=python or set_backend('python'))"
        return backend_info()
    res = _ext.load(build=name == "cpp", required_ops=_required_ops())
    cpp, reason = _select(res)
    if not cpp and name == "cpp":
        raise RuntimeError(f"torch_bp: the compiled backend is unavailable: {reason}")
    _mode, _cpp, _reason = name, cpp, reason
    if not cpp and res.broken and not _warned:
        _warned = True
        warnings.warn(f"torch_bp: using the Python backend: {reason}", RuntimeWarning, stacklevel=2)
    _cuda = _register_cuda(define=res.library is None)
    return backend_info()


def _required_ops() -> set[str]:
    return {op for ops in compiled_rules().values() for op in ops}


_fakes_error = ""  # why the fake kernels did not register, if they did not


def _select(res) -> tuple[bool, str]:
    """(use the compiled kernels, why not) for a :func:`torch_bp._ext.load` result."""
    global _fakes_error
    if res.library is None:
        return False, res.reason
    if not _fakes_error:
        try:
            _register_fakes()
        except Exception as e:  # an op whose schema differs from its fake kernel's: not our library
            _fakes_error = (f"the compiled library {res.library} does not match these sources ({e}); "
                            f"rebuild: {_ext.BUILD_HINT}")
    return (False, _fakes_error) if _fakes_error else (True, "")


_schema_lib = None  # the torch_bp op schemas defined from csrc/ops.cpp's text (no compiled library)


def _define_schemas() -> bool:
    """Define every ``torch_bp`` op schema of ``csrc/ops.cpp`` from its ``m.def("...")`` lines
    (for the CUDA kernels where the C++ library cannot be built); False when there is no csrc."""
    global _schema_lib
    if _schema_lib is not None:
        return True
    if _ext.CSRC is None or not (_ext.CSRC / "ops.cpp").is_file():
        return False
    import re
    text = (_ext.CSRC / "ops.cpp").read_text()
    lib = torch.library.Library("torch_bp", "DEF")
    for call in re.findall(r'm\.def\(((?:\s*"[^"]*")+)\s*\)', text):
        lib.define("".join(re.findall(r'"([^"]*)"', call)))
    _schema_lib = lib
    return True


def _register_cuda(define: bool = False) -> bool:
    """Register the Triton kernels as the CUDA implementation of their ops, where a CUDA device
    and Triton are both present (once; :data:`CUDA_OPS` names them); True when they are.
    ``define``: the compiled library is not loaded, so define the op schemas first (once)."""
    global CUDA_OPS, _cuda_reason
    if CUDA_OPS:
        return True
    if not torch.cuda.is_available():
        _cuda_reason = "no CUDA device"
        return False
    try:
        from .kernels import triton as triton_kernels
    except ImportError as e:  # triton is optional: the Python rules run on CUDA without it
        _cuda_reason = f"triton is not installed: {e}"
        return False
    if define:
        if not _define_schemas():
            _cuda_reason = "no compiled library and no csrc/ops.cpp to define the op schemas from"
            return False
        _register_fakes()
    CUDA_OPS = triton_kernels.register()
    return True


def use_cpp(*tensors, op: str | None = None) -> bool:
    """True when the compiled kernels should run for these tensors (``None`` entries are skipped).

    CPU tensors: the C++ kernels (float32, float64, bfloat16). CUDA tensors: only when ``op``,
    the op the call site runs, has a CUDA kernel (:data:`CUDA_OPS`; float32, bfloat16, float16).
    All tensors must be on one device type and of one dtype.

    NOTE: False while grad mode is on. A Function's forward always runs with grad mode off; its
    backward runs with grad mode on only under ``create_graph=True``, where the backward must be
    differentiable: the Python rule, built from differentiable ops, runs there.
    """
    if torch.is_grad_enabled():
        return False
    dtype = device = None
    for t in tensors:
        if t is None:
            continue
        if dtype is None:
            dtype, device = t.dtype, t.device.type
        elif t.dtype != dtype or t.device.type != device:
            return False
    if device == "cuda":
        if not _cuda or op not in CUDA_OPS or dtype not in CUDA_DTYPES:
            return False
    elif not _cpp or device not in (None, "cpu") or dtype not in DTYPES + (None,):
        return False
    if not torch.compiler.is_compiling() and _compat.functorch_transform_active(*tensors):
        return False  # under vmap/grad/jacrev: the Python rule (generate_vmap_rule needs it)
    return True


# --- fake (meta) kernels: in torch_bp/kernels/cpu/<family>.py, beside csrc/cpu/<family>.cpp ---
_fakes_done = False


def _register_fakes():
    global _fakes_done
    if _fakes_done:
        return
    _fakes_done = True
    from .kernels.cpu import register_fakes
    register_fakes()


def _init():
    mode = os.environ.get("TORCH_BP_BACKEND", "auto").strip().lower() or "auto"
    if mode not in MODES:
        warnings.warn(f"torch_bp: TORCH_BP_BACKEND={mode!r} is not one of {MODES}; using 'auto'", RuntimeWarning)
        mode = "auto"
    set_backend(mode)


_init()
