"""The compiled kernels' cache of large output blocks (csrc/common.h, ``OutputCache``): a freed
output's block is reused, a block is never handed out while a tensor still uses it, it works from
several threads at once, the unused blocks it keeps stay within TORCH_BP_OUTPUT_CACHE_MB, and a
process exits cleanly with blocks still in use or cached. Outputs of 4 to 64 MiB go through it;
layer_norm's forward (one such output, a (1024, 1024) float32 tensor is 4 MiB) is the probe."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pytest
import torch
import torch.nn.functional as TF

from harness import assert_close

D = 1024


def _fwd(x, w, b):
    return torch.ops.torch_bp.layer_norm_fwd(x, w, b, D, 1e-5)[0]


@pytest.fixture
def cache(cpp):
    if os.environ.get("TORCH_BP_OUTPUT_CACHE_MB", "256") == "0":
        pytest.skip("TORCH_BP_OUTPUT_CACHE_MB=0: the cache is off")


def _inputs(seed, rows=D):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, D, generator=g), torch.randn(D, generator=g), torch.randn(D, generator=g)


def test_freed_output_block_is_reused(cache):
    x, w, b = _inputs(0)
    y = _fwd(x, w, b)
    assert y.nbytes == 4 << 20 and y.data_ptr() % (2 << 20) == 0  # a whole, aligned block
    ptr = y.data_ptr()
    del y
    y = _fwd(x, w, b)
    assert y.data_ptr() == ptr
    assert_close(y, TF.layer_norm(x, (D,), w, b), torch.float32, 1.0, "layer_norm from a reused block")


def test_live_outputs_never_share_a_block(cache):
    live = []
    for i in range(8):
        x, w, b = _inputs(i)
        live.append((_fwd(x, w, b), (x, w, b)))
        if i % 3 == 2:  # free one now and then, so that later outputs come from the cache
            live.pop(0)
    ptrs = [y.data_ptr() for y, _ in live]
    assert len(set(ptrs)) == len(ptrs)
    for y, (x, w, b) in live:  # a block handed out twice would have been overwritten
        assert_close(y, TF.layer_norm(x, (D,), w, b), torch.float32, 1.0, "layer_norm of a live output")


def test_reused_block_storage_resizes(cache):
    x, w, b = _inputs(1)
    y = _fwd(x, w, b)
    want = y.clone()
    y.resize_(2 * D, D)  # a resizable storage: grows through the same allocator, keeping its contents
    assert torch.equal(y[:D], want)


def test_threads_get_distinct_blocks(cache):
    errors, seen = [], []

    def work(seed):
        try:
            mine = []
            for i in range(6):
                x, w, b = _inputs(100 * seed + i)
                mine.append((_fwd(x, w, b), (x, w, b)))
                if len(mine) > 2:
                    mine.pop(0)
                for y, (xx, ww, bb) in mine:
                    assert_close(y, TF.layer_norm(xx, (D,), ww, bb), torch.float32, 1.0, "threaded layer_norm")
            seen.append([y.data_ptr() for y, _ in mine])
            seen.append(mine)  # kept alive until every thread is done
        except Exception as e:  # reported below, not lost in the thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    ptrs = [p for entry in seen if isinstance(entry[0], int) for p in entry]
    assert len(ptrs) == 8 and len(set(ptrs)) == 8


_BOUND = textwrap.dedent("""
    import os, torch, torch_bp
    torch_bp.set_backend("cpp")
    x = torch.randn(1024, 1024); w = torch.randn(1024); b = torch.randn(1024)
    f = lambda: torch.ops.torch_bp.layer_norm_fwd(x, w, b, 1024, 1e-5)[0]
    page = os.sysconf("SC_PAGE_SIZE")
    rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page / 2**20
    kept = [f()]  # warm up, then exit with a block in use
    live = [f() for _ in range(4)]  # four 4 MiB blocks, written by the kernel
    before = rss()
    del live  # the cache keeps at most its limit of them; the rest go back to the system
    print(before - rss())
""")


@pytest.mark.parametrize("limit_mb, freed_mb", [(8, 8), (0, 16), (256, 0)])
def test_cache_keeps_at_most_its_limit_and_exits_cleanly(cpp, limit_mb, freed_mb):
    """Resident memory given back when four 4 MiB outputs are freed: all but the limit's worth."""
    env = {**os.environ, "TORCH_BP_OUTPUT_CACHE_MB": str(limit_mb), "TORCH_BP_BACKEND": "cpp"}
    r = subprocess.run([sys.executable, "-c", _BOUND], env=env, capture_output=True, text=True, timeout=300,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0, r.stderr[-2000:]
    freed = float(r.stdout.split()[-1])
    assert freed_mb - 1 <= freed <= freed_mb + 1.5, f"{freed:.1f} MiB given back, expected {freed_mb}"
