"""The CNN kernels' edge cases against torch, on both backends: max pooling's window argmax with
ties, NaN and -inf on the vectorised 2 x 2 path (rows wide enough for whole vectors) and the
scalar one, and its backward; batch norm's and group norm's compiled statistics far from zero; average
pooling on wide rows (the vectorised 2 x 2 path); the compiled conv weight gradient (im2col + matmul
over row blocks) with strides, dilation, groups and edges."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF

import torch_bp
from harness import assert_close


@pytest.fixture
def backend(each_backend):
    return each_backend


@pytest.mark.parametrize("shape", [(2, 3, 8, 40), (2, 2, 7, 67), (1, 2, 5, 4)])
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_max_pool_2x2_ties_nan_inf_like_torch(backend, shape, ceil_mode, dtype):
    torch.manual_seed(0)
    x = torch.randint(-2, 3, shape).to(dtype)  # many ties
    x[torch.rand(shape) < 0.05] = float("nan")
    x[torch.rand(shape) < 0.05] = float("-inf")
    x.requires_grad_()
    y, i = torch_bp.functional.max_pool2d(x, 2, ceil_mode=ceil_mode, return_indices=True)
    yt, it = TF.max_pool2d(x, 2, ceil_mode=ceil_mode, return_indices=True)
    assert torch.equal(i, it)
    assert torch.equal(y.isnan(), yt.isnan()) and torch.equal(y.nan_to_num(), yt.nan_to_num())
    g = torch.randn(y.shape, dtype=dtype)
    assert torch.equal(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(yt, x, g)[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_far_from_zero_like_torch(backend, dtype, training):
    torch.manual_seed(0)
    x = (torch.randn(6, 5, 7, 9, dtype=torch.float64) + 30).to(dtype).requires_grad_()  # |mean| / std = 30
    w = torch.randn(5, dtype=dtype, requires_grad=True)
    b = torch.randn(5, dtype=dtype, requires_grad=True)
    rm, rv = torch.full((5,), 29.0, dtype=dtype), torch.full((5,), 1.3, dtype=dtype)
    y = torch_bp.functional.batch_norm(x, rm.clone(), rv.clone(), w, b, training)
    yt = TF.batch_norm(x.double(), rm.double(), rv.double(), w.double(), b.double(), training)
    g = torch.randn(y.shape, dtype=dtype)
    # against float64 on the same inputs; cond: the conditioning |mean| / std (tests/harness.py),
    # below bfloat16's own rounding of the output
    cond = 1.0 if dtype == torch.bfloat16 else 30.0
    assert_close(y, yt.to(dtype), dtype, cond=cond, what="batch_norm output")
    for a, r in zip(torch.autograd.grad(y, (x, w, b), g), torch.autograd.grad(yt, (x, w, b), g.double())):
        assert_close(a, r.to(dtype), dtype, cond=cond, what="batch_norm grad")


@pytest.mark.parametrize("shape", [(2, 3, 8, 40), (2, 2, 7, 67), (1, 2, 5, 4)])
@pytest.mark.parametrize("options", [{"kernel_size": 2}, {"kernel_size": 2, "ceil_mode": True},
                                     {"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False},
                                     {"kernel_size": (2, 3), "stride": (3, 2), "divisor_override": 5}],
                         ids=["2x2", "2x2-ceil", "overlap-exclude-pad", "divisor"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_avg_pool_wide_rows_like_torch(backend, shape, options, dtype):
    """avg_pool2d on rows wide enough for the compiled kernel's vectorised 2 x 2 path, and its tails."""
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    y = torch_bp.functional.avg_pool2d(x, **options)
    yt = TF.avg_pool2d(x.double(), **options)
    g = torch.randn(y.shape, dtype=dtype)
    assert_close(y, yt.to(dtype), dtype, what="avg_pool2d output")
    assert_close(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(yt, x, g.double())[0].to(dtype), dtype,
                 what="avg_pool2d grad")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_far_from_zero_like_torch(backend, dtype, affine):
    """group_norm with groups longer than a vector and odd tails, |mean| / std = 30."""
    torch.manual_seed(0)
    x = (torch.randn(3, 6, 5, 7, dtype=torch.float64) + 30).to(dtype).requires_grad_()
    w, b = (torch.randn(6, dtype=dtype, requires_grad=True) if affine else None for _ in range(2))
    y = torch_bp.functional.group_norm(x, 3, w, b)
    ref = [t.double() if t is not None else None for t in (x, w, b)]
    yt = TF.group_norm(ref[0], 3, ref[1], ref[2])
    g = torch.randn(y.shape, dtype=dtype)
    cond = 1.0 if dtype == torch.bfloat16 else 30.0
    assert_close(y, yt.to(dtype), dtype, cond=cond, what="group_norm output")
    inputs = [t for t in (x, w, b) if t is not None]
    for a, r in zip(torch.autograd.grad(y, inputs, g), torch.autograd.grad(yt, inputs, g.double())):
        assert_close(a, r.to(dtype), dtype, cond=cond, what="group_norm grad")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("case", [
    ((3, 6, 11, 9), (4, 3, 3, 2), (2, 1), (2, 0), (2, 1), 2),   # strided, dilated, grouped, padding beyond taps
    ((2, 5, 7, 40), (3, 5, 3, 5), (1, 3), (1, 2), (1, 2), 1),   # several row blocks, stride 3 columns
    ((2, 4, 3, 3), (2, 4, 5, 5), (1, 1), (2, 2), (1, 1), 1),    # kernel larger than the input, all-zero rows
    ((2, 4, 13), (6, 2, 4), (1,), (3,), (2,), 2),              # 1d
    ((4, 3, 300), (5, 3, 7), (3,), (1,), (1,), 1),             # 1d, long rows, stride
], ids=["2d-strided-grouped", "2d-row-blocks", "2d-big-kernel", "1d-grouped", "1d-long"])
def test_conv_weight_grad_kernel_matches_python_rule(case, dtype, cpp):
    """torch_bp::conv_weight_grad against the Python rule (_weight_grad's swapped convolution)."""
    from torch_bp.ops.conv import _weight_grad
    x_shape, w_shape, stride, padding, dilation, groups = case
    torch.manual_seed(0)
    x = torch.randn(x_shape, dtype=dtype)
    w = torch.randn(w_shape, dtype=dtype)
    conv = TF.conv2d if len(w_shape) == 4 else TF.conv1d
    gy = torch.randn(conv(x, w, None, stride, padding, dilation, groups).shape, dtype=dtype)
    k = w_shape[2:]
    got = torch.ops.torch_bp.conv_weight_grad(x.transpose(0, 1).contiguous().transpose(0, 1), gy, list(k),
                                              list(stride), list(padding), list(dilation), groups)
    torch_bp.set_backend("python")  # the cpp fixture restores the backend after the test
    want = _weight_grad(x, gy, k, stride, padding, dilation, groups)
    assert got.shape == w.shape
    assert_close(got, want, dtype, what="conv weight grad")


@pytest.mark.parametrize("case", [
    ((2, 4, 33, 35), (6, 4, 3, 3), (1, 1), (1, 1), 1),    # a plane past _TAP_MATMUL_MIN_PLANE
    ((2, 4, 9, 7), (6, 2, 3, 2), (2, 0), (2, 3), 2),      # dilated, grouped, padding beyond the taps
    ((2, 3, 5, 6), (2, 3, 1, 1), (0, 0), (1, 1), 1),      # 1 x 1
    ((2, 4, 13), (6, 2, 4), (3,), (2,), 2),                # 1d
], ids=["2d-large-plane", "2d-dilated-grouped", "2d-1x1", "1d-grouped"])
def test_weight_grad_taps_like_torch(case):
    """The Python rule's one-matmul-per-tap weight gradient (flat windows of padded rows) against torch."""
    from torch_bp.ops.conv import _weight_grad_taps
    x_shape, w_shape, padding, dilation, groups = case
    torch.manual_seed(0)
    x = torch.randn(x_shape, dtype=torch.float64)
    w = torch.randn(w_shape, dtype=torch.float64, requires_grad=True)
    conv = TF.conv2d if len(w_shape) == 4 else TF.conv1d
    y = conv(x, w, None, 1, padding, dilation, groups)
    gy = torch.randn(y.shape, dtype=torch.float64)
    want, = torch.autograd.grad(y, w, gy)
    assert_close(_weight_grad_taps(x, gy, w_shape[2:], padding, dilation, groups), want, torch.float64,
                 what="weight grad by taps")
