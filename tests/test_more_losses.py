"""CTCLoss and AdaptiveLogSoftmaxWithLoss beyond the registry harness: the parts of their modules the harness does
not reach (log_prob, predict, conversion) and the proof that every backward compute node is a torch_bp rule."""
from __future__ import annotations

import pytest
import torch

import torch_bp
from torch_bp._coverage import backward_coverage
from harness import assert_close


def _pair(*args, **kwargs):
    torch.manual_seed(0)
    ref = torch.nn.AdaptiveLogSoftmaxWithLoss(*args, **kwargs)
    ours = torch_bp.nn.AdaptiveLogSoftmaxWithLoss(*args, **kwargs)
    ours.load_state_dict(ref.state_dict())
    return ours, ref


def test_adaptive_backward_is_ours():
    ours, _ = _pair(6, 9, [3, 6], head_bias=True)
    x, t = torch.randn(7, 6, requires_grad=True), torch.tensor([0, 2, 3, 5, 6, 8, 4])
    for fn in (lambda m, x: m(x, t).loss, lambda m, x: m(x, t).output, lambda m, x: m.log_prob(x)):
        wrapper = _Call(ours, fn)
        cov = backward_coverage(wrapper, (x,))
        assert cov.autograd == 0 and cov.ours >= 1, str(cov)


class _Call(torch.nn.Module):
    """A module whose forward is fn(inner, x) (backward_coverage walks the graph of a module's output)."""

    def __init__(self, inner, fn):
        super().__init__()
        self.inner, self.fn = inner, fn

    def forward(self, x):
        return self.fn(self.inner, x)


def test_adaptive_log_prob_and_predict_match_torch():
    for args, kwargs, x in (((6, 9, [3, 6]), {"div_value": 2.0}, torch.randn(5, 6)),
                            ((8, 10, [4]), {"head_bias": True}, torch.randn(4, 8)),
                            ((6, 9, [3, 6]), {"div_value": 2.0}, torch.randn(1, 6))):
        ours, ref = _pair(*args, **kwargs)
        xo, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
        lo, lr = ours.log_prob(xo), ref.log_prob(xr)
        assert type(lo.grad_fn).__name__ == "AdaptiveLogProbFunctionBackward"
        assert_close(lo, lr, torch.float32, what="log_prob")
        up = torch.randn(lr.shape)
        lo.backward(up)
        lr.backward(up)
        assert_close(xo.grad, xr.grad, torch.float32, what="log_prob grad of input")
        for (n, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()):
            assert_close(p.grad, q.grad, torch.float32, what=f"log_prob grad of {n}")
        assert torch.equal(ours.predict(x), ref.predict(x))
    ours, ref = _pair(6, 9, [3, 6], div_value=2.0)
    for bad in (torch.randn(6), torch.randn(2, 3, 6), torch.randn(2, 5)):
        try:
            ref.log_prob(bad)
        except Exception as e:  # noqa: BLE001 - torch's exception type is what we compare
            with pytest.raises(type(e)):
                ours.log_prob(bad)
        else:
            raise AssertionError(f"torch accepted {tuple(bad.shape)}")


def test_adaptive_log_prob_gradcheck():
    torch.manual_seed(0)
    m = torch_bp.nn.AdaptiveLogSoftmaxWithLoss(4, 7, [2, 5], div_value=2.0, head_bias=True).double()
    params = [m.head.weight, m.head.bias] + [p for seq in m.tail for p in (seq[0].weight, seq[1].weight)]
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)

    def fn(x, hw, hb, *tail):
        return torch_bp.functional.adaptive_log_prob(x, hw, list(tail), m.cutoffs, hb)

    assert torch.autograd.gradcheck(fn, (x, *params))


def test_adaptive_convert_and_revert():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.AdaptiveLogSoftmaxWithLoss(6, 9, [3, 6], div_value=2.0))
    sd = model.state_dict()
    conv = torch_bp.convert(model)
    assert type(conv[1]) is torch_bp.nn.AdaptiveLogSoftmaxWithLoss
    assert conv.state_dict().keys() == sd.keys()
    back = torch_bp.revert(conv)
    assert type(back[1]) is torch.nn.AdaptiveLogSoftmaxWithLoss


def test_ctc_module_backward_is_ours_through_log_softmax():
    """A CTC head converted: log_softmax, then CTCLoss, every backward compute node ours."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.LogSoftmax(-1))
    conv = torch_bp.convert(model)
    ctc = torch_bp.convert(torch.nn.CTCLoss())
    assert type(ctc) is torch_bp.nn.CTCLoss
    x = torch.randn(6, 2, 4)
    targets, il, tl = torch.tensor([[1, 2, 2], [3, 4, 0]]), torch.tensor([6, 5]), torch.tensor([3, 2])
    cov = backward_coverage(conv, (x,), loss_fn=lambda lp: ctc(lp, targets, il, tl))
    assert cov.autograd == 0 and cov.ours_by_rule["CTCLossFunction"] == 1, str(cov)
