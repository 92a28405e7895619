"""Build the compiled C++ kernels now: ``python -m torch_bp.build``.

Importing torch_bp never compiles (see :mod:`torch_bp._ext`); this is the explicit step
(``scripts/setup.sh`` runs the same, ``torch_bp.backend_info(build=True)`` from Python). It
rebuilds a damaged build and retries a failed one. Exits 0 when the kernels are loaded.
"""
from __future__ import annotations

import sys


def main() -> int:
    from torch_bp import _ext, backend

    info = backend.backend_info(build=True)
    print(info)
    return 0 if _ext._loaded and not _ext._unusable else 1


if __name__ == "__main__":
    sys.exit(main())
