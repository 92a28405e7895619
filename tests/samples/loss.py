"""Samples for the losses: every reduction, weights, ignore_index, label smoothing, K-dim inputs."""
import torch

from . import ModuleSample, Sample, error_samples, module_samples, samples

REDUCTIONS = ("mean", "sum", "none")


# --- mse / l1 / huber / smooth_l1: the same shapes, each with its own options ---
def _pointwise(make, options, weight=True):
    for red in REDUCTIONS:
        for kw in options:
            tag = ",".join(f"{k}={v}" for k, v in kw.items())
            yield Sample(f"2d {red} {tag}", (make(4, 5), make(4, 5)), {"reduction": red, **kw})
    yield Sample("3d target-no-grad", (make(2, 3, 4), make(2, 3, 4, requires_grad=False)))
    yield Sample("input-no-grad sum", (make(3, 4, requires_grad=False), make(3, 4)), {"reduction": "sum"})
    yield Sample("scalar", (make(), make()))
    yield Sample("empty-batch mean", (make(0, 3), make(0, 3)))
    yield Sample("empty-batch none", (make(0, 3), make(0, 3)), {"reduction": "none"})
    yield Sample("noncontiguous", (make(3, 5, layout="t"), make(3, 5, layout="slice")), {"reduction": "none"})
    yield Sample("broadcast target", (make(3, 4), make(4)))
    yield Sample("large-magnitude", (make(4, 5, low=-1e3, high=1e3), make(4, 5, low=-1e3, high=1e3)))
    yield Sample("legacy size_average=False", (make(3, 4), make(3, 4)), {"size_average": False})
    yield Sample("legacy reduce=False", (make(3, 4), make(3, 4)), {"reduce": False})
    if weight:
        for red in REDUCTIONS:
            yield Sample(f"weight {red}", (make(3, 4), make(3, 4), None, None, red, make(3, 4, low=0.1, high=2)))
        yield Sample("weight-no-grad", (make(3, 4), make(3, 4)),
                     {"weight": make(3, 4, low=0.1, high=2, requires_grad=False)})


def _drop_legacy(gen):
    """huber_loss has no size_average/reduce, and takes its weight by keyword."""
    for s in gen:
        if any(k in s.kwargs for k in ("size_average", "reduce")):
            continue
        if len(s.args) > 2:
            s = Sample(s.desc, s.args[:2], {"reduction": s.args[4], "weight": s.args[5]}, s.gradcheck, s.cond)
        yield s


@samples("mse_loss")
def _mse(make):
    yield from _pointwise(make, ({},))


@samples("l1_loss")
def _l1(make):
    yield from _pointwise(make, ({},))
    x = torch.tensor([0.5, -1.0, 2.0], dtype=make.dtype, requires_grad=True)
    yield Sample("at-kink d=0 (l1'(0) = 0)", (x, x.detach().clone()), gradcheck=False)


@samples("huber_loss")
def _huber(make):
    yield from _drop_legacy(_pointwise(make, ({}, {"delta": 0.5}, {"delta": 3.0})))


@samples("smooth_l1_loss")
def _smooth_l1(make):
    yield from _pointwise(make, ({}, {"beta": 0.5}, {"beta": 0.0}, {"beta": 3.0}), weight=False)


def _pointwise_modules(ctor_options):
    def gen(make):
        for args, kw in ctor_options:
            yield ModuleSample(f"{args} {kw}", args, kw, (make(4, 5), make(4, 5)))
    return gen


module_samples("mse_loss")(_pointwise_modules([((), {}), ((), {"reduction": "sum"}),
                                               ((None, False), {})]))
module_samples("l1_loss")(_pointwise_modules([((), {}), ((), {"reduction": "none"})]))
module_samples("huber_loss")(_pointwise_modules([((), {}), (("sum", 0.5), {})]))
module_samples("smooth_l1_loss")(_pointwise_modules([((), {}), ((), {"beta": 0.5, "reduction": "none"})]))


def _pointwise_errors(make):
    yield Sample("shape mismatch", (make(4, 5), make(3, 5)))
    yield Sample("bad reduction", (make(4, 5), make(4, 5)), {"reduction": "avg"})
    yield Sample("integer inputs", (torch.arange(4), torch.arange(4)))


for _name in ("mse_loss", "l1_loss"):
    @error_samples(_name)
    def _err(make):
        yield from _pointwise_errors(make)
        yield Sample("weight shape", (make(4, 5), make(4, 5)), {"weight": make(5)})


@error_samples("huber_loss")
def _huber_err(make):
    yield from _pointwise_errors(make)
    yield Sample("delta=0", (make(4, 5), make(4, 5)), {"delta": 0.0})
    yield Sample("delta<0", (make(4, 5), make(4, 5)), {"delta": -1.0})


@error_samples("smooth_l1_loss")
def _smooth_l1_err(make):
    yield from _pointwise_errors(make)
    yield Sample("beta<0", (make(4, 5), make(4, 5)), {"beta": -1.0})


# --- binary_cross_entropy_with_logits ---
@samples("binary_cross_entropy_with_logits")
def _bce(make):
    for red in REDUCTIONS:
        yield Sample(f"2d {red}", (make(4, 5), make(4, 5, low=0, high=1)), {"reduction": red})
    cls_w = make(5, low=0.2, high=2, requires_grad=False)
    pos_w = make(5, low=0.2, high=3, requires_grad=False)
    yield Sample("weight", (make(4, 5), make(4, 5, low=0, high=1), cls_w))
    yield Sample("pos_weight sum", (make(4, 5), make(4, 5, low=0, high=1)), {"pos_weight": pos_w,
                                                                              "reduction": "sum"})
    yield Sample("weight+pos_weight none", (make(3, 5), make(3, 5, low=0, high=1), cls_w),
                 {"pos_weight": pos_w, "reduction": "none"})
    yield Sample("binary targets, target-no-grad", (make(4, 5), make.int(2, 4, 5).to(make.dtype)))
    yield Sample("input-no-grad pos_weight", (make(4, 5, requires_grad=False), make(4, 5, low=0, high=1)),
                 {"pos_weight": pos_w})
    yield Sample("scalar", (make(), make(low=0, high=1)))
    yield Sample("empty-batch", (make(0, 5), make(0, 5, low=0, high=1)))
    yield Sample("noncontiguous", (make(4, 5, layout="t"), make(4, 5, low=0, high=1, layout="slice")),
                 {"reduction": "none"})
    # logsigmoid never overflows: finite for logits of +-100 (e^100 would overflow float32)
    yield Sample("large-magnitude", (make(4, 5, low=-100, high=100), make(4, 5, low=0, high=1)),
                 {"pos_weight": pos_w})


@module_samples("binary_cross_entropy_with_logits")
def _bce_mod(make):
    x, t = make(4, 5), make(4, 5, low=0, high=1, requires_grad=False)
    yield ModuleSample("plain", (), {}, (x, t))
    yield ModuleSample("weight+pos_weight", (make(5, low=0.2, high=2, requires_grad=False),),
                       {"pos_weight": make(5, low=0.2, high=3, requires_grad=False), "reduction": "sum"}, (x, t))


@error_samples("binary_cross_entropy_with_logits")
def _bce_err(make):
    yield Sample("target size", (make(4, 5), make(4, low=0, high=1)))
    yield Sample("integer target", (make(4, 5), make.int(2, 4, 5)))
    yield Sample("weight shape", (make(4, 5), make(4, 5, low=0, high=1), make(3, requires_grad=False)))
    yield Sample("pos_weight larger than input", (make(4, 5), make(4, 5, low=0, high=1)),
                 {"pos_weight": make(2, 4, 5, requires_grad=False)})
    yield Sample("weight requires grad", (make(4, 5), make(4, 5, low=0, high=1), make(5)))
    yield Sample("bad reduction", (make(4, 5), make(4, 5, low=0, high=1)), {"reduction": "avg"})


# --- cross_entropy / nll_loss ---
def _targets_with(make, classes, shape, values):
    """Random class indices of ``shape`` whose first entries are ``values`` (e.g. ignored ones)."""
    t = make.int(classes, *shape).reshape(-1)
    t[: len(values)] = torch.tensor(values)
    return t.reshape(shape)


def _class_samples(make, soft):
    """Samples shared by cross_entropy and nll_loss (index targets)."""
    cw = make(5, low=0.2, high=2, requires_grad=False)  # torch takes no gradient for class weights here
    for red in REDUCTIONS:
        yield Sample(f"2d {red}", (make(4, 5), make.int(5, 4)), {"reduction": red})
    yield Sample("unbatched", (make(5), make.int(5)))
    yield Sample("unbatched none", (make(5), make.int(5)), {"reduction": "none"})
    yield Sample("3d K-dim", (make(2, 5, 3), make.int(5, 2, 3)))
    yield Sample("4d K-dim none", (make(2, 4, 3, 2), make.int(4, 2, 3, 2)), {"reduction": "none"})
    yield Sample("5d K-dim sum", (make(2, 3, 2, 2, 2), make.int(3, 2, 2, 2, 2)), {"reduction": "sum"})
    yield Sample("uint8 targets", (make(4, 5), make.int(5, 4).to(torch.uint8)))
    for red in REDUCTIONS:
        yield Sample(f"weight+ignore_index {red}", (make(6, 5), _targets_with(make, 5, (6,), [2, 2])),
                     {"weight": cw, "ignore_index": 2, "reduction": red})
    yield Sample("default ignore_index -100", (make(5, 4), _targets_with(make, 4, (5,), [-100])))
    yield Sample("K-dim weight+ignore_index", (make(2, 5, 3), _targets_with(make, 5, (2, 3), [-1, 0, -1])),
                 {"weight": cw, "ignore_index": -1})
    # mean = 0/0 = NaN as torch (finite differences of NaN are meaningless); gradient 0
    yield Sample("every target ignored (mean: 0/0)", (make(3, 4), torch.full((3,), -100)), gradcheck=False)
    yield Sample("every target ignored sum", (make(3, 4), torch.full((3,), -100)), {"reduction": "sum"})
    yield Sample("empty-batch", (make(0, 5), make.int(5, 0)))
    yield Sample("empty-batch none", (make(0, 5), make.int(5, 0)), {"reduction": "none"})
    yield Sample("noncontiguous", (make(4, 5, layout="t"), make.int(5, 8)[::2]))
    yield Sample("legacy size_average=False", (make(4, 5), make.int(5, 4)), {"size_average": False})


@samples("nll_loss")
def _nll(make):
    yield from _class_samples(make, soft=False)
    yield Sample("log-probabilities large-magnitude", (make(4, 5, low=-1e4, high=0), make.int(5, 4)))


@samples("cross_entropy")
def _cross_entropy(make):
    cw = make(5, low=0.2, high=2, requires_grad=False)
    yield from _class_samples(make, soft=True)
    # x - max is exact: the loss and softmax keep full precision for logits near 1e4; a
    # spread of 2e4 gives probabilities of exactly 0 and 1 and finite losses of ~1e4.
    yield Sample("large-magnitude offset", (make(4, 5, low=1e4, high=1e4 + 8), make.int(5, 4)))
    yield Sample("large-magnitude spread", (make(4, 5, low=-1e4, high=1e4), make.int(5, 4)), {"reduction": "sum"})
    for red in REDUCTIONS:
        yield Sample(f"label_smoothing weight+ignore_index {red}",
                     (make(6, 5), _targets_with(make, 5, (6,), [0, 3])),
                     {"weight": cw, "ignore_index": 0, "label_smoothing": 0.2, "reduction": red})
    yield Sample("label_smoothing K-dim", (make(2, 5, 3), make.int(5, 2, 3)), {"label_smoothing": 0.1})
    yield Sample("label_smoothing=1", (make(3, 5), make.int(5, 3)), {"label_smoothing": 1.0})
    yield Sample("negative label_smoothing (ignored)", (make(3, 5), make.int(5, 3)), {"label_smoothing": -0.5})
    # class probabilities
    for red in REDUCTIONS:
        yield Sample(f"probabilities {red}", (make(4, 5), make.prob(4, 5)), {"reduction": red})
    yield Sample("probabilities target-grad", (make(4, 5), make(4, 5, low=0, high=1)))
    yield Sample("probabilities input-no-grad", (make(4, 5, requires_grad=False), make(4, 5, low=0, high=1)))
    yield Sample("probabilities weight-grad label_smoothing", (make(4, 5), make.prob(4, 5), make(5, low=0.2, high=2)),
                 {"label_smoothing": 0.3})
    for red in REDUCTIONS:
        yield Sample(f"probabilities label_smoothing weight {red}", (make(4, 5), make(4, 5, low=0, high=1), cw),
                     {"label_smoothing": 0.15, "reduction": red})
    yield Sample("probabilities K-dim", (make(2, 5, 3), make.prob(2, 5, 3, dim=1)), {"reduction": "none"})
    yield Sample("probabilities unbatched", (make(5), make.prob(5)))
    yield Sample("probabilities empty-batch", (make(0, 5), make.prob(0, 5)))
    yield Sample("probabilities large-magnitude", (make(4, 5, low=-1e4, high=1e4), make.prob(4, 5)))


def _class_modules(make, ce):
    x, t = make(4, 5), make.int(5, 4)
    cw = make(5, low=0.2, high=2, requires_grad=False)
    yield ModuleSample("plain", (), {}, (x, t))
    yield ModuleSample("weight+ignore_index sum", (cw,), {"ignore_index": 1, "reduction": "sum"},
                       (x, _targets_with(make, 5, (4,), [1])))
    yield ModuleSample("legacy size_average", (None, False), {}, (x, t))
    if ce:
        yield ModuleSample("label_smoothing", (), {"label_smoothing": 0.1, "weight": cw}, (x, t))
        yield ModuleSample("probabilities", (), {}, (x, make.prob(4, 5)))


module_samples("nll_loss")(lambda make: _class_modules(make, ce=False))
module_samples("cross_entropy")(lambda make: _class_modules(make, ce=True))


def _class_errors(make):
    yield Sample("target with two dims", (make(4, 5), make.int(5, 4, 2)))
    yield Sample("batch size mismatch", (make(4, 5), make.int(5, 3)))
    yield Sample("K-dim target size", (make(2, 5, 3), make.int(5, 2, 4)))
    yield Sample("4d target size", (make(2, 5, 3, 2), make.int(5, 2, 3, 3)))
    yield Sample("float target of another shape", (make(4, 5), make(4, requires_grad=False)))
    yield Sample("int32 target", (make(4, 5), make.int(5, 4).int()))
    yield Sample("class index out of range", (make(4, 5), torch.tensor([0, 1, 5, 2])))
    yield Sample("negative class index", (make(4, 5), torch.tensor([0, -1, 3, 2])))
    yield Sample("K-dim class out of range", (make(2, 5, 3), torch.tensor([[0, 1, 7], [0, 0, 0]])))
    yield Sample("weight size", (make(4, 5), make.int(5, 4), make(4, requires_grad=False)))
    yield Sample("weight requires grad", (make(4, 5), make.int(5, 4), make(5)))
    yield Sample("weight dtype", (make(4, 5), make.int(5, 4), make(5, requires_grad=False, dtype=torch.float64)))
    yield Sample("bad reduction", (make(4, 5), make.int(5, 4)), {"reduction": "avg"})
    yield Sample("integer input", (torch.zeros(4, 5, dtype=torch.long), make.int(5, 4)))


@error_samples("nll_loss")
def _nll_err(make):
    yield from _class_errors(make)
    yield Sample("0-d input", (make(requires_grad=False), torch.tensor(0)))


@error_samples("cross_entropy")
def _cross_entropy_err(make):
    yield from _class_errors(make)
    yield Sample("0-d input", (make(requires_grad=False), torch.tensor(0)))
    yield Sample("label_smoothing>1", (make(4, 5), make.int(5, 4)), {"label_smoothing": 1.5})
    yield Sample("probabilities: integer target", (make(4, 5), make.int(2, 4, 5)))
    yield Sample("probabilities: ignore_index", (make(4, 5), make.prob(4, 5)), {"ignore_index": 1})
    yield Sample("probabilities: weight size", (make(4, 5), make.prob(4, 5), make(4, requires_grad=False)))
    yield Sample("probabilities: label_smoothing>1", (make(4, 5), make.prob(4, 5)), {"label_smoothing": 1.5})


# --- linear_cross_entropy (the language-model head: linear + cross_entropy in chunks of rows) ---
@samples("linear_cross_entropy")
def _linear_cross_entropy(make):
    # 7 rows, 5 classes; chunk_size 3 divides neither (chunks of 3, 3, 1 rows)
    for mode in ("fused", "recompute"):
        for red in REDUCTIONS:
            yield Sample(f"2d {red} chunk=3 {mode}", (make(7, 4), make(5, 4), make.int(5, 7), make(5)),
                         {"reduction": red, "chunk_size": 3, "mode": mode})
        yield Sample(f"ignore_index+label_smoothing chunk=2 {mode}",
                     (make(6, 4), make(5, 4), _targets_with(make, 5, (6,), [1, 1]), make(5)),
                     {"ignore_index": 1, "label_smoothing": 0.2, "chunk_size": 2, "mode": mode})
        yield Sample(f"3d no-bias sum {mode}", (make(2, 3, 4), make(5, 4), make.int(5, 2, 3)),
                     {"reduction": "sum", "mode": mode})
        yield Sample(f"weight-grad-only {mode}", (make(5, 4, requires_grad=False), make(6, 4), make.int(6, 5)),
                     {"bias": make(6, requires_grad=False), "mode": mode, "chunk_size": 4})
        yield Sample(f"input-and-bias-grad label_smoothing sum {mode}",
                     (make(5, 4), make(6, 4, requires_grad=False), make.int(6, 5), make(6)),
                     {"label_smoothing": 0.1, "reduction": "sum", "mode": mode})
    yield Sample("label_smoothing none 3d", (make(2, 3, 4), make(5, 4), make.int(5, 2, 3), make(5)),
                 {"label_smoothing": 0.3, "reduction": "none", "chunk_size": 4})
    yield Sample("default ignore_index -100", (make(5, 3), make(4, 3), _targets_with(make, 4, (5,), [-100])))
    yield Sample("uint8 targets", (make(4, 3), make(6, 3), make.int(6, 4).to(torch.uint8), make(6)))
    yield Sample("unbatched", (make(4), make(5, 4), make.int(5), make(5)))
    yield Sample("broadcast bias (1,)", (make(4, 3), make(5, 3), make.int(5, 4), make(1)))
    yield Sample("every target ignored (mean: 0/0)", (make(3, 4), make(5, 4), torch.full((3,), -100)),
                 gradcheck=False)
    yield Sample("every target ignored sum", (make(3, 4), make(5, 4), torch.full((3,), -100)),
                 {"reduction": "sum"})
    # mean of no rows = 0/0 = NaN as torch (finite differences of NaN are meaningless); gradient 0
    yield Sample("empty-batch (mean: 0/0)", (make(0, 4), make(5, 4), make.int(5, 0), make(5)), gradcheck=False)
    yield Sample("empty-batch sum", (make(0, 4), make(5, 4), make.int(5, 0), make(5)), {"reduction": "sum"})
    yield Sample("empty-batch none recompute", (make(0, 4), make(5, 4), make.int(5, 0)),
                 {"reduction": "none", "mode": "recompute"})
    yield Sample("noncontiguous", (make(4, 3, layout="t"), make(5, 3, layout="slice"), make.int(5, 8)[::2]),
                 {"chunk_size": 3})
    yield Sample("large-magnitude offset", (make(4, 3, low=1e2, high=1e2 + 2), make(5, 3, low=30, high=32),
                                            make.int(5, 4)))
    yield Sample("1 row per chunk", (make(3, 4), make(5, 4), make.int(5, 3), make(5)),
                 {"chunk_size": 1})


@error_samples("linear_cross_entropy")
def _linear_cross_entropy_err(make):
    x, w, t = make(4, 3), make(5, 3), make.int(5, 4)
    yield Sample("0-d input", (make(requires_grad=False), w, torch.tensor(0)))
    yield Sample("in_features mismatch", (make(4, 2), w, t))
    yield Sample("3-d weight", (x, make(5, 3, 1), t))
    yield Sample("bias size", (x, w, t, make(4)))
    yield Sample("weight dtype", (x, make(5, 3, dtype=torch.float64), t))
    yield Sample("bias dtype", (x, w, t, make(5, dtype=torch.float64)))
    yield Sample("target shape", (x, w, make.int(5, 3)))
    yield Sample("target of the logits' shape", (x, w, make.int(5, 4, 5)))
    yield Sample("float target", (x, w, t.float()))
    yield Sample("int32 target", (x, w, t.int()))
    yield Sample("class index out of range", (x, w, torch.tensor([0, 1, 5, 2])))
    yield Sample("negative class index", (x, w, torch.tensor([0, -1, 3, 2])))
    yield Sample("integer input and weight", (torch.zeros(4, 3, dtype=torch.long),
                                              torch.zeros(5, 3, dtype=torch.long), t))
    yield Sample("bad reduction", (x, w, t), {"reduction": "avg"})
    yield Sample("label_smoothing>1", (x, w, t), {"label_smoothing": 1.5})
