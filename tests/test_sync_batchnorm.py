"""SyncBatchNorm across two processes (gloo, CPU): the outputs, input gradients, summed parameter gradients and
running statistics equal torch's BatchNorm on the concatenated batch; and, on one process, the conversion that
keeps our class under Lightning's sync_batchnorm=True."""
from __future__ import annotations

import datetime
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

import torch_bp

SPLIT = (3, 5)        # rows of the batch on rank 0 and rank 1 (unequal: the counts weight the statistics)
SHAPE = (3, 4)        # (C, L) of each row
STEPS = 2             # forward/backward steps (running statistics and num_batches_tracked after each)


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(sum(SPLIT), *SHAPE, generator=g, dtype=torch.float64) * 2 + 1
    up = torch.randn(sum(SPLIT), *SHAPE, generator=g, dtype=torch.float64)
    w = torch.rand(SHAPE[0], generator=g, dtype=torch.float64) + 0.5
    b = torch.randn(SHAPE[0], generator=g, dtype=torch.float64)
    return x, up, w, b


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, out_dir):
    try:
        torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                             world_size=2, timeout=datetime.timedelta(seconds=60))
    except Exception as e:  # noqa: BLE001 - reported to the test, which skips with the reason
        with open(os.path.join(out_dir, "skip"), "w") as f:
            f.write(f"gloo could not start: {type(e).__name__}: {e}")
        return
    try:
        x, up, w, b = _data()
        lo = sum(SPLIT[:rank])
        rows = slice(lo, lo + SPLIT[rank])
        bn = torch_bp.convert(torch.nn.BatchNorm1d(SHAPE[0], momentum=None).double())
        bn = torch_bp.nn.SyncBatchNorm.convert_sync_batchnorm(bn)
        with torch.no_grad():
            bn.weight.copy_(w)
            bn.bias.copy_(b)
        res = {}
        for step in range(STEPS):
            xr = (x[rows] * (step + 1)).requires_grad_()
            y = bn(xr)
            assert type(y.grad_fn).__name__ == "SyncBatchNormFunctionBackward", type(y.grad_fn).__name__
            bn.zero_grad()
            y.backward(up[rows])
            res[step] = {"y": y.detach(), "grad_x": xr.grad, "grad_w": bn.weight.grad.clone(),
                         "grad_b": bn.bias.grad.clone(), "mean": bn.running_mean.clone(),
                         "var": bn.running_var.clone(), "tracked": bn.num_batches_tracked.clone()}
        bn.eval()
        res["eval"] = bn(x[rows]).detach()  # eval: no sync, the running statistics
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available in this build")
def test_two_processes_match_batch_norm_on_the_whole_batch(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    if (tmp_path / "skip").exists():
        pytest.skip((tmp_path / "skip").read_text())
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    x, up, w, b = _data()
    ref = torch.nn.BatchNorm1d(SHAPE[0], momentum=None).double()
    with torch.no_grad():
        ref.weight.copy_(w)
        ref.bias.copy_(b)
    tol = dict(rtol=1e-10, atol=1e-10)
    for step in range(STEPS):
        xs = (x * (step + 1)).requires_grad_()
        ref.zero_grad()
        y = ref(xs)
        y.backward(up)
        got = [r[step] for r in ranks]
        torch.testing.assert_close(torch.cat([g["y"] for g in got]), y.detach(), **tol)
        torch.testing.assert_close(torch.cat([g["grad_x"] for g in got]), xs.grad, **tol)
        # each rank holds its part of the parameter gradients (as torch's SyncBatchNorm); DDP sums them
        torch.testing.assert_close(got[0]["grad_w"] + got[1]["grad_w"], ref.weight.grad, **tol)
        torch.testing.assert_close(got[0]["grad_b"] + got[1]["grad_b"], ref.bias.grad, **tol)
        for g in got:
            torch.testing.assert_close(g["mean"], ref.running_mean, **tol)
            torch.testing.assert_close(g["var"], ref.running_var, **tol)
            assert int(g["tracked"]) == int(ref.num_batches_tracked) == step + 1
    ref.eval()
    torch.testing.assert_close(torch.cat([r["eval"] for r in ranks]), ref(x).detach(), **tol)


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(12, 4), torch.nn.BatchNorm1d(4))


def test_convert_keeps_our_class_and_reverts():
    """torch_bp's convert_sync_batchnorm (what the Lightning plugin applies): every BatchNorm becomes our
    SyncBatchNorm sharing its parameters and buffers, the rest stays ours; revert gives the original classes;
    state_dicts round-trip; on one process it computes what BatchNorm computes."""
    model = torch_bp.convert(_net())
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    bn = model[1]
    synced = torch_bp.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert type(synced[1]) is type(synced[5]) is torch_bp.nn.SyncBatchNorm
    assert type(synced[0]) is torch_bp.nn.Conv2d
    assert synced[1].weight is bn.weight and synced[1].running_mean is bn.running_mean
    assert synced.state_dict().keys() == sd.keys()
    x = torch.randn(5, 2, 4, 4)
    y = synced(x)
    ref = _net()
    torch.testing.assert_close(y, ref(x))
    torch.testing.assert_close(synced[1].running_var, ref[1].running_var)
    back = torch_bp.nn.SyncBatchNorm.revert_sync_batchnorm(synced)
    assert type(back[1]) is torch_bp.nn.BatchNorm2d and type(back[5]) is torch_bp.nn.BatchNorm1d
    back.load_state_dict(synced.state_dict())
    # torch's SyncBatchNorm (torch.nn.SyncBatchNorm.convert_sync_batchnorm ran first) is swapped by convert,
    # and one of unknown origin reverts to a BatchNorm of any rank
    theirs = torch.nn.SyncBatchNorm.convert_sync_batchnorm(_net())
    ours = torch_bp.convert(theirs)
    assert type(ours[1]) is torch_bp.nn.SyncBatchNorm
    assert type(torch_bp.nn.SyncBatchNorm.revert_sync_batchnorm(ours)[1]) is torch_bp.nn.BatchNormXd


def test_lightning_plugin_keeps_our_rule():
    pytest.importorskip("lightning")
    from lightning.pytorch.plugins import TorchSyncBatchNorm

    from torch_bp.lightning import SyncBatchNormPlugin

    plugin = SyncBatchNormPlugin()
    assert isinstance(plugin, TorchSyncBatchNorm)  # accepted by Trainer(sync_batchnorm=True, plugins=[plugin])
    model = torch_bp.convert(_net())
    applied = plugin.apply(model)
    assert type(applied[1]) is torch_bp.nn.SyncBatchNorm
    reverted = plugin.revert(applied)
    assert type(reverted[1]) is torch_bp.nn.BatchNorm2d and type(reverted[5]) is torch_bp.nn.BatchNorm1d
