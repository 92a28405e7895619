"""Samples for the losses: every reduction, weights, ignore_index, label smoothing, K-dim inputs."""
import torch

from . import Make, ModuleSample, Sample, error_samples, module_samples, samples

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
    cw = lambda: make(5, low=0.2, high=2, requires_grad=False)  # noqa: E731  (class weights)
    for mode in ("fused", "recompute"):
        for red in REDUCTIONS:
            yield Sample(f"2d {red} chunk=3 {mode}", (make(7, 4), make(5, 4), make.int(5, 7)),
                         {"linear_bias": make(5), "reduction": red, "chunk_size": 3, "mode": mode})
            yield Sample(f"class weights {red} chunk=3 {mode}", (make(7, 4), make(5, 4), make.int(5, 7)),
                         {"linear_bias": make(5), "weight": cw(), "reduction": red, "chunk_size": 3, "mode": mode})
        yield Sample(f"ignore_index+label_smoothing chunk=2 {mode}",
                     (make(6, 4), make(5, 4), _targets_with(make, 5, (6,), [1, 1])),
                     {"linear_bias": make(5), "ignore_index": 1, "label_smoothing": 0.2, "chunk_size": 2, "mode": mode})
        yield Sample(f"class weights+ignore_index+label_smoothing mean {mode}",
                     (make(6, 4), make(5, 4), _targets_with(make, 5, (6,), [1, 1])),
                     {"weight": cw(), "ignore_index": 1, "label_smoothing": 0.3, "chunk_size": 4, "mode": mode})
        yield Sample(f"no-bias sum {mode}", (make(6, 4), make(5, 4), make.int(5, 6)),
                     {"reduction": "sum", "mode": mode})
        yield Sample(f"weight-grad-only {mode}", (make(5, 4, requires_grad=False), make(6, 4), make.int(6, 5)),
                     {"linear_bias": make(6, requires_grad=False), "mode": mode, "chunk_size": 4})
        yield Sample(f"input-and-bias-grad label_smoothing sum {mode}",
                     (make(5, 4), make(6, 4, requires_grad=False), make.int(6, 5)),
                     {"linear_bias": make(6), "label_smoothing": 0.1, "reduction": "sum", "mode": mode})
    yield Sample("label_smoothing none class weights", (make(6, 4), make(5, 4), make.int(5, 6)),
                 {"linear_bias": make(5), "weight": cw(), "label_smoothing": 0.3, "reduction": "none",
                  "chunk_size": 4})
    yield Sample("default ignore_index (None: -100)", (make(5, 3), make(4, 3), _targets_with(make, 4, (5,), [-100])))
    yield Sample("uint8 targets", (make(4, 3), make(6, 3), make.int(6, 4).to(torch.uint8)), {"linear_bias": make(6)})
    yield Sample("unbatched", (make(4), make(5, 4), make.int(5)), {"linear_bias": make(5)})
    yield Sample("unbatched none", (make(4), make(5, 4), make.int(5)), {"reduction": "none"})
    yield Sample("torch's options (batch_chunk_size: our chunk_size)", (make(7, 4), make(5, 4), make.int(5, 7)),
                 {"options": torch.nn.LinearCrossEntropyOptions(batch_chunk_size=2)})
    # composed of our linear and cross_entropy rules: probability targets, K-dim heads
    yield Sample("probability targets (composed)", (make(4, 3), make(5, 3), make.prob(4, 5)),
                 {"linear_bias": make(5), "label_smoothing": 0.1})
    yield Sample("probability targets class weights none (composed)", (make(4, 3), make(5, 3), make.prob(4, 5)),
                 {"weight": cw(), "reduction": "none"})
    yield Sample("K-dim head (5, 2, 3, d) (composed)", (make(4, 3), make(5, 2, 3, 3), make.int(5, 4, 2, 3)),
                 {"linear_bias": make(5, 2, 3), "ignore_index": 2})
    yield Sample("every target ignored (mean: 0/0)", (make(3, 4), make(5, 4), torch.full((3,), -100)),
                 gradcheck=False)
    yield Sample("every target ignored sum", (make(3, 4), make(5, 4), torch.full((3,), -100)),
                 {"reduction": "sum"})
    # mean of no rows = 0/0 = NaN as torch (finite differences of NaN are meaningless); gradient 0
    yield Sample("empty-batch (mean: 0/0)", (make(0, 4), make(5, 4), make.int(5, 0)), {"linear_bias": make(5)},
                 gradcheck=False)
    yield Sample("empty-batch sum", (make(0, 4), make(5, 4), make.int(5, 0)), {"linear_bias": make(5),
                                                                                "reduction": "sum"})
    yield Sample("empty-batch none recompute", (make(0, 4), make(5, 4), make.int(5, 0)),
                 {"reduction": "none", "mode": "recompute"})
    yield Sample("noncontiguous", (make(4, 3, layout="t"), make(5, 3, layout="slice"), make.int(5, 8)[::2]),
                 {"chunk_size": 3})
    yield Sample("large-magnitude offset", (make(4, 3, low=1e2, high=1e2 + 2), make(5, 3, low=30, high=32),
                                            make.int(5, 4)))
    yield Sample("1 row per chunk", (make(3, 4), make(5, 4), make.int(5, 3)), {"linear_bias": make(5),
                                                                                "chunk_size": 1})


@module_samples("linear_cross_entropy")
def _linear_cross_entropy_mod(make):
    yield ModuleSample("(6, 5)", (6, 5), {}, (make(4, 6), make.int(5, 4)))
    yield ModuleSample("bias, class weights, label_smoothing", (6, 5),
                       {"bias": True, "weight": make(5, low=0.2, high=2, requires_grad=False),
                        "label_smoothing": 0.1, "reduction": "sum"}, (make(4, 6), make.int(5, 4)))
    yield ModuleSample("out_features (2,)", (6, 5), {"out_features": (2,), "ignore_index": 1},
                       (make(3, 6), make.int(5, 3, 2)))


@error_samples("linear_cross_entropy")
def _linear_cross_entropy_err(make):
    x, w, t = make(4, 3), make(5, 3), make.int(5, 4)
    yield Sample("0-d input", (make(requires_grad=False), w, torch.tensor(0)))
    yield Sample("3-d input", (make(2, 4, 3), w, make.int(5, 2, 4)))
    yield Sample("in_features mismatch", (make(4, 2), w, t))
    yield Sample("1-d weight", (x, make(3), t))
    yield Sample("bias size", (x, w, t), {"linear_bias": make(4)})
    yield Sample("bias (1,)", (x, w, t), {"linear_bias": make(1)})
    yield Sample("K-dim head, unbatched input", (make(3), make(5, 2, 3), make.int(5, 2)))
    yield Sample("probabilities with ignore_index", (x, w, make.prob(4, 5)), {"ignore_index": 1})
    yield Sample("weight dtype", (x, make(5, 3, dtype=torch.float64), t))
    yield Sample("bias dtype", (x, w, t), {"linear_bias": make(5, dtype=torch.float64)})
    yield Sample("class weight size", (x, w, t), {"weight": make(4, requires_grad=False)})
    yield Sample("class weight requires grad", (x, w, t), {"weight": make(5)})
    yield Sample("target shape", (x, w, make.int(5, 3)))
    yield Sample("float target", (x, w, t.float()))
    yield Sample("int32 target", (x, w, t.int()))
    yield Sample("class index out of range", (x, w, torch.tensor([0, 1, 5, 2])))
    yield Sample("negative class index", (x, w, torch.tensor([0, -1, 3, 2])))
    yield Sample("integer input and weight", (torch.zeros(4, 3, dtype=torch.long),
                                              torch.zeros(5, 3, dtype=torch.long), t))
    yield Sample("bad reduction", (x, w, t), {"reduction": "avg"})
    yield Sample("label_smoothing>1", (x, w, t), {"label_smoothing": 1.5})


# --- more pointwise losses: one generator, the inputs and options per loss ---
def _inputs_for(make, name, *shape, **kw):
    """The tensor arguments of loss ``name`` for inputs of ``shape`` (valid values for the loss)."""
    if name == "binary_cross_entropy":
        return make(*shape, low=0.05, high=0.95), make(*shape, low=0, high=1)
    if name == "kl_div":  # log-probabilities and probabilities (> 0: d/dtarget is NaN at 0)
        return make(*shape, low=-3, high=0), make(*shape, low=0.05, high=1)
    if name == "poisson_nll_loss":
        return make(*shape, low=0.1, high=2), make(*shape, low=0.1, high=4)
    if name == "gaussian_nll_loss":
        return make(*shape), make(*shape), make(*shape, low=0.1, high=2)
    if name in ("soft_margin_loss", "hinge_embedding_loss"):
        return make(*shape), _signs(make, shape)
    if name == "margin_ranking_loss":
        return make(*shape), make(*shape), _signs(make, shape)
    return make(*shape), make(*shape, low=0, high=1)  # multilabel_soft_margin_loss


def _signs(make, shape):
    return (make.int(2, *shape) * 2 - 1).to(make.dtype)


_POINTWISE_MORE = {
    # name: options to sample (beyond reduction)
    "binary_cross_entropy": ({},),
    "kl_div": ({}, {"log_target": True}),
    "poisson_nll_loss": ({}, {"log_input": False}, {"full": True}, {"log_input": False, "full": True, "eps": 0.1}),
    "gaussian_nll_loss": ({}, {"full": True}, {"eps": 0.05}),
    "soft_margin_loss": ({},),
    "hinge_embedding_loss": ({}, {"margin": 0.5}),
    "margin_ranking_loss": ({}, {"margin": 0.3}),
    "multilabel_soft_margin_loss": ({},),
}


# torch's gaussian_nll_loss is a Python composite: in bfloat16 each of its ~6 ops rounds (ours
# once, in float32), and d/dvar = (1/v - r^2) / 2 cancels between its two terms: cond 3.
_COND = {"gaussian_nll_loss": 3.0}


def _pointwise_more(make, name, options):
    cond = _COND.get(name, 1.0)
    for s in _pointwise_more_plain(make, name, options):
        s.cond = cond
        yield s


def _pointwise_more_plain(make, name, options):
    reductions = REDUCTIONS + (("batchmean",) if name == "kl_div" else ())
    for red in reductions:
        for kw in options:
            tag = ",".join(f"{k}={v}" for k, v in kw.items())
            yield Sample(f"2d {red} {tag}", _inputs_for(make, name, 4, 5), {"reduction": red, **kw})
    yield Sample("3d", _inputs_for(make, name, 2, 3, 4))
    yield Sample("1d", _inputs_for(make, name, 5))
    yield Sample("empty-batch sum", _inputs_for(make, name, 0, 3), {"reduction": "sum"})
    yield Sample("empty-batch none", _inputs_for(make, name, 0, 3), {"reduction": "none"})
    args = _inputs_for(make, name, 3, 4)
    yield Sample("target-no-grad", (args[0], args[1].detach()) + args[2:])
    yield Sample("input-no-grad", (args[0].detach(),) + args[1:])
    t = _inputs_for(make, name, 4, 3)
    yield Sample("noncontiguous", tuple(a.detach().t().requires_grad_(a.requires_grad) for a in t))
    if name not in ("binary_cross_entropy", "soft_margin_loss", "multilabel_soft_margin_loss"):
        yield Sample("legacy reduce=False", _inputs_for(make, name, 3, 4), {"reduce": False}) \
            if name != "gaussian_nll_loss" else Sample("var one dim short", (make(3, 4), make(3, 4), make(3, low=0.1, high=2)))


for _name, _opts in _POINTWISE_MORE.items():
    samples(_name)(lambda make, name=_name, opts=_opts: _pointwise_more(make, name, opts))


@samples("binary_cross_entropy")
def _bce_probs(make):
    yield from _pointwise_more(make, "binary_cross_entropy", ({},))
    w = make(4, 5, low=0.1, high=2, requires_grad=False)
    yield Sample("weight", _inputs_for(make, "binary_cross_entropy", 4, 5) + (w,))
    yield Sample("weight broadcast (5,) sum", _inputs_for(make, "binary_cross_entropy", 4, 5),
                 {"weight": make(5, low=0.1, high=2, requires_grad=False), "reduction": "sum"})
    x = torch.tensor([0.0, 1.0, 0.5], dtype=make.dtype, requires_grad=True)
    yield Sample("input at 0 and 1 (logs clamped at -100)", (x, torch.tensor([0.3, 0.7, 1.0], dtype=make.dtype)),
                 gradcheck=False)


@samples("gaussian_nll_loss")
def _gaussian(make):
    yield from _pointwise_more(make, "gaussian_nll_loss", _POINTWISE_MORE["gaussian_nll_loss"])
    yield Sample("var (N, 1) none", (make(3, 4), make(3, 4), make(3, 1, low=0.1, high=2)), {"reduction": "none"},
                 cond=_COND["gaussian_nll_loss"])
    # the clamp passes the gradient unchanged (torch: a clamp under no_grad): not a finite difference
    yield Sample("var below eps (clamped)", (make(3, 4), make(3, 4), make(3, 4, low=0, high=1e-3)), {"eps": 1e-2},
                 gradcheck=False)
    yield Sample("var float", (make(3, 4), make(3, 4), 0.5))


@samples("multilabel_soft_margin_loss")
def _mlsm(make):
    yield from _pointwise_more(make, "multilabel_soft_margin_loss", ({},))
    for red in REDUCTIONS:
        yield Sample(f"weight {red}", _inputs_for(make, "multilabel_soft_margin_loss", 4, 5) + (make(5, low=0.1, high=2),),
                     {"reduction": red})
    yield Sample("binary targets", (make(4, 5), make.int(2, 4, 5).to(make.dtype)))


def _pointwise_more_modules(name, ctor_options):
    def gen(make):
        for args, kw in ctor_options:
            yield ModuleSample(f"{args} {kw}", args, kw, _inputs_for(make, name, 4, 5))
    return gen


module_samples("binary_cross_entropy")(_pointwise_more_modules("binary_cross_entropy", [
    ((), {}), ((), {"reduction": "sum"})]))
module_samples("kl_div")(_pointwise_more_modules("kl_div", [((), {"reduction": "batchmean"}),
                                                          ((), {"reduction": "sum", "log_target": True})]))
module_samples("poisson_nll_loss")(_pointwise_more_modules("poisson_nll_loss", [
    ((), {}), ((False, True), {"reduction": "sum"})]))
module_samples("gaussian_nll_loss")(_pointwise_more_modules("gaussian_nll_loss", [
    ((), {}), ((), {"full": True, "reduction": "none"})]))
module_samples("soft_margin_loss")(_pointwise_more_modules("soft_margin_loss", [((), {}), ((), {"reduction": "none"})]))
module_samples("hinge_embedding_loss")(_pointwise_more_modules("hinge_embedding_loss", [((), {}), ((0.5,), {})]))
module_samples("margin_ranking_loss")(_pointwise_more_modules("margin_ranking_loss", [((), {}), ((0.2,), {})]))
module_samples("multilabel_soft_margin_loss")(_pointwise_more_modules("multilabel_soft_margin_loss", [
    ((), {}), ((), {"reduction": "sum"})]))


@error_samples("binary_cross_entropy")
def _bce_err(make):
    x, t = _inputs_for(make, "binary_cross_entropy", 3, 4)
    yield Sample("target size", (x, t[:2]))
    yield Sample("input > 1", (x.detach() + 1, t))
    yield Sample("target > 1", (x, t.detach() + 1))
    yield Sample("weight requires grad", (x, t, make(3, 4)))
    yield Sample("bad reduction", (x, t), {"reduction": "avg"})


@error_samples("kl_div")
def _kl_err(make):
    yield Sample("shape mismatch", (make(3, 4), make(2, 4)))
    yield Sample("bad reduction", (make(3, 4), make(3, 4)), {"reduction": "avg"})


@error_samples("poisson_nll_loss")
def _poisson_err(make):
    yield Sample("shape mismatch", (make(3, 4), make(2, 4)))
    yield Sample("bad reduction", (make(3, 4), make(3, 4)), {"reduction": "avg"})


@error_samples("gaussian_nll_loss")
def _gaussian_err(make):
    yield Sample("negative var", (make(3, 4), make(3, 4), make(3, 4, low=-1, high=-0.5)))
    yield Sample("var size", (make(3, 4), make(3, 4), make(2, 2, low=0.1, high=1)))
    yield Sample("bad reduction", (make(3, 4), make(3, 4), make(3, 4, low=0.1)), {"reduction": "avg"})
    yield Sample("negative float var", (make(3, 4), make(3, 4), -1.0))


@error_samples("soft_margin_loss")
def _soft_margin_err(make):
    yield Sample("target requires grad", (make(3, 4), make(3, 4)))
    yield Sample("bad reduction", (make(3, 4), make(3, 4, requires_grad=False)), {"reduction": "avg"})


@error_samples("margin_ranking_loss")
def _margin_ranking_err(make):
    yield Sample("dims differ", (make(3, 4), make(3, 4), make(3)))
    yield Sample("bad reduction", (make(3), make(3), make(3)), {"reduction": "avg"})


@error_samples("hinge_embedding_loss")
def _hinge_err(make):
    yield Sample("shape mismatch", (make(3, 4), make(2, 4)))
    yield Sample("bad reduction", (make(3), make(3)), {"reduction": "avg"})


@error_samples("multilabel_soft_margin_loss")
def _mlsm_err(make):
    yield Sample("shape mismatch", (make(3, 4), make(3, 5)))
    yield Sample("bad reduction", (make(3, 4), make(3, 4)), {"reduction": "avg"})


# --- row losses ---
@samples("cosine_embedding_loss")
def _cosine_embedding(make):
    for red in REDUCTIONS:
        yield Sample(f"2d {red}", (make(4, 5), make(4, 5), _signs(make, (4,))), {"reduction": red})
    yield Sample("margin=0.3", (make(4, 5), make(4, 5), _signs(make, (4,))), {"margin": 0.3})
    yield Sample("margin=-0.5 sum", (make(4, 5), make(4, 5), _signs(make, (4,))), {"margin": -0.5, "reduction": "sum"})
    yield Sample("1d (0-d target)", (make(5), make(5), torch.tensor(-1.0, dtype=make.dtype)), {"margin": -0.9})
    yield Sample("integer target", (make(4, 5), make(4, 5), make.int(2, 4) * 2 - 1))
    yield Sample("input2-no-grad", (make(3, 4), make(3, 4, requires_grad=False), _signs(make, (3,))))
    yield Sample("empty-batch sum", (make(0, 4), make(0, 4), _signs(make, (0,))), {"reduction": "sum"})
    yield Sample("noncontiguous", (make(3, 4, layout="t"), make(3, 4, layout="slice"), _signs(make, (3,))))


@module_samples("cosine_embedding_loss")
def _cosine_embedding_mod(make):
    yield ModuleSample("default", (), {}, (make(4, 5), make(4, 5), _signs(make, (4,))))
    yield ModuleSample("margin=0.2 none", (0.2,), {"reduction": "none"}, (make(4, 5), make(4, 5), _signs(make, (4,))))


@error_samples("cosine_embedding_loss")
def _cosine_embedding_err(make):
    yield Sample("2-d target", (make(4, 5), make(4, 5), make(4, 1)))
    yield Sample("1-d target, 1-d inputs", (make(5), make(5), make(1)))
    yield Sample("bad reduction", (make(4, 5), make(4, 5), _signs(make, (4,))), {"reduction": "avg"})


def _triplets(make, *shape, **kw):
    return make(*shape, **kw), make(*shape, **kw), make(*shape, **kw)


@samples("triplet_margin_loss")
def _triplet(make):
    for red in REDUCTIONS:
        yield Sample(f"2d {red}", _triplets(make, 4, 5), {"reduction": red})
    yield Sample("swap", _triplets(make, 4, 5), {"swap": True})
    yield Sample("p=1 margin=2", _triplets(make, 4, 5), {"p": 1, "margin": 2.0})
    yield Sample("p=3 swap sum", _triplets(make, 4, 5), {"p": 3, "swap": True, "reduction": "sum"})
    yield Sample("1d", _triplets(make, 5))
    yield Sample("3d", _triplets(make, 2, 3, 4))
    yield Sample("negative-no-grad", _triplets(make, 3, 4)[:2] + (make(3, 4, requires_grad=False),))
    yield Sample("empty-batch sum", _triplets(make, 0, 4), {"reduction": "sum"})


@module_samples("triplet_margin_loss")
def _triplet_mod(make):
    yield ModuleSample("default", (), {}, _triplets(make, 4, 5))
    yield ModuleSample("swap p=1", (), {"swap": True, "p": 1.0}, _triplets(make, 4, 5))


@error_samples("triplet_margin_loss")
def _triplet_err(make):
    yield Sample("dims differ", (make(3, 4), make(3, 4), make(4)))
    yield Sample("margin=0", _triplets(make, 3, 4), {"margin": 0.0})
    yield Sample("bad reduction", _triplets(make, 3, 4), {"reduction": "avg"})


def _cosine_distance(x, y):
    return 1.0 - torch.nn.functional.cosine_similarity(x, y)


@samples("triplet_margin_with_distance_loss")
def _triplet_dist(make):
    for red in REDUCTIONS:
        yield Sample(f"2d {red}", _triplets(make, 4, 5), {"reduction": red})
    yield Sample("swap margin=0.5", _triplets(make, 4, 5), {"swap": True, "margin": 0.5})
    yield Sample("distance_function: 1 - cosine (torch's)", _triplets(make, 4, 5),
                 {"distance_function": _cosine_distance, "swap": True})
    yield Sample("1d", _triplets(make, 5))


@module_samples("triplet_margin_with_distance_loss")
def _triplet_dist_mod(make):
    yield ModuleSample("default", (), {}, _triplets(make, 4, 5))
    yield ModuleSample("swap", (), {"swap": True, "margin": 0.5}, _triplets(make, 4, 5))


@error_samples("triplet_margin_with_distance_loss")
def _triplet_dist_err(make):
    yield Sample("dims differ", (make(3, 4), make(3, 4), make(4)))
    yield Sample("margin=0", _triplets(make, 3, 4), {"margin": 0.0})


@samples("multi_margin_loss")
def _multi_margin(make):
    if make.dtype in (torch.bfloat16, torch.float16):  # torch's CPU kernel has none (see the error samples)
        make = Make(torch.float32, make.device)
    for red in REDUCTIONS:
        yield Sample(f"2d {red}", (make(4, 5), make.int(5, 4)), {"reduction": red})
    yield Sample("p=2 margin=0.5", (make(4, 5), make.int(5, 4)), {"p": 2, "margin": 0.5})
    yield Sample("weight", (make(4, 5), make.int(5, 4)), {"weight": make(5, low=0.2, high=2, requires_grad=False)})
    yield Sample("p=2 weight sum", (make(4, 5), make.int(5, 4)),
                 {"p": 2, "weight": make(5, low=0.2, high=2, requires_grad=False), "reduction": "sum"})
    yield Sample("1d (0-d target)", (make(5), make.int(5)))
    # no empty batch with reduction='sum': torch's kernel returns an uninitialised value (tests/fuzz/known.py)
    yield Sample("empty-batch none", (make(0, 5), make.int(5, 0)), {"reduction": "none"})
    yield Sample("noncontiguous", (make(4, 5, layout="t"), make.int(5, 4)))


@module_samples("multi_margin_loss")
def _multi_margin_mod(make):
    yield ModuleSample("default", (), {}, (make(4, 5), make.int(5, 4)))
    yield ModuleSample("p=2 weight", (2, 0.5, make(5, low=0.2, high=2, requires_grad=False)), {},
                       (make(4, 5), make.int(5, 4)))


@error_samples("multi_margin_loss")
def _multi_margin_err(make):
    yield Sample("p=3", (make(4, 5), make.int(5, 4)), {"p": 3})
    yield Sample("class out of range", (make(4, 5), torch.tensor([0, 1, 5, 2])))
    yield Sample("weight size", (make(4, 5), make.int(5, 4)), {"weight": make(4, requires_grad=False)})
    yield Sample("2-d weight", (make(4, 5), make.int(5, 4)), {"weight": make(5, 1, requires_grad=False)})
    yield Sample("target size", (make(4, 5), make.int(5, 3)))
    yield Sample("3-d input", (make(2, 4, 5), make.int(5, 2)))
    yield Sample("bfloat16 input (no CPU kernel in torch)", (make(4, 5, dtype=torch.bfloat16), make.int(5, 4)))


def _label_lists(make, n, c):
    """Rows of class indices ended by -1 (several listed targets per row, one row with none)."""
    t = torch.stack([torch.randperm(c) for _ in range(n)])
    for r in range(n):
        t[r, r % c:] = -1
    return t


@samples("multilabel_margin_loss")
def _multilabel_margin(make):
    if make.dtype in (torch.bfloat16, torch.float16):  # torch's CPU kernel has none (see the error samples)
        make = Make(torch.float32, make.device)
    for red in REDUCTIONS:
        yield Sample(f"2d {red}", (make(4, 5), _label_lists(make, 4, 5)), {"reduction": red})
    t = _label_lists(make, 3, 5)
    t[:, -1] = 2  # values after the first -1 are ignored
    yield Sample("values after -1", (make(3, 5), t))
    yield Sample("every class a target", (make(2, 3), torch.tensor([[0, 1, 2], [2, 1, 0]])))
    yield Sample("1d", (make(5), torch.tensor([3, 0, -1, 1, 1])))
    # no empty batch with reduction='sum': torch's kernel returns an uninitialised value (tests/fuzz/known.py)
    yield Sample("empty-batch none", (make(0, 5), torch.zeros(0, 5, dtype=torch.long)), {"reduction": "none"})
    yield Sample("noncontiguous", (make(4, 5, layout="t"), _label_lists(make, 4, 5)))


@module_samples("multilabel_margin_loss")
def _multilabel_margin_mod(make):
    yield ModuleSample("default", (), {}, (make(4, 5), _label_lists(make, 4, 5)))
    yield ModuleSample("sum", (), {"reduction": "sum"}, (make(4, 5), _label_lists(make, 4, 5)))


@error_samples("multilabel_margin_loss")
def _multilabel_margin_err(make):
    yield Sample("target shape", (make(4, 5), _label_lists(make, 4, 4)))
    yield Sample("class out of range", (make(2, 3), torch.tensor([[0, 5, -1], [1, -1, 0]])))
    yield Sample("3-d input", (make(2, 4, 5), torch.zeros(2, 4, 5, dtype=torch.long)))
    yield Sample("float16 input (no CPU kernel in torch)", (make(4, 5, dtype=torch.float16), _label_lists(make, 4, 5)))


# --- ctc_loss ---
# log_probs are log_softmax outputs (CTC's use); tests/test_layers.py gradchecks this row through a log_softmax,
# since torch's gradient convention (kept by ours) is exact only along normalised log_probs.
def _log_probs(make, *shape):
    return torch.log_softmax(make(*shape, requires_grad=False).float(), -1).to(make.dtype).requires_grad_()


@samples("ctc_loss")
def _ctc(make):
    if make.dtype not in (torch.float32, torch.float64):
        return  # torch's CPU kernel has float32/float64 only: ours refuses the others too (error samples)
    gen = torch.Generator().manual_seed(0)
    tg = torch.randint(1, 5, (3, 4), generator=gen)
    tg[0, 2] = tg[0, 1]                                       # a repeated label: no skip there
    il, tl = torch.tensor([6, 5, 4]), torch.tensor([4, 2, 0])  # shorter inputs, an empty target
    for red in REDUCTIONS:
        yield Sample(f"padded {red}", (_log_probs(make, 6, 3, 5), tg, il, tl), {"reduction": red})
    flat = torch.cat([tg[0, :4], tg[1, :2]])
    yield Sample("concatenated targets", (_log_probs(make, 6, 3, 5), flat, il, tl))
    yield Sample("lengths as lists", (_log_probs(make, 6, 3, 5), tg, [6, 5, 4], (4, 2, 0)), {"reduction": "sum"})
    yield Sample("blank=2", (_log_probs(make, 5, 2, 4), torch.tensor([[0, 1], [3, 3]]), [5, 5], [2, 2]),
                 {"blank": 2, "reduction": "none"})
    yield Sample("unbatched", (_log_probs(make, 6, 5), tg[0, :3], torch.tensor(6), torch.tensor(3)))
    yield Sample("unbatched padded none", (_log_probs(make, 6, 5), tg[:1], [6], [3]), {"reduction": "none"})
    # impossible alignments: a target longer than its input (inf; nan gradients in its rows, as torch)
    # and an empty input with a nonempty target; zero_infinity gives 0 and no gradient there
    imp = (torch.tensor([[1, 2, 3], [1, 1, 2], [2, 3, 4]]), torch.tensor([5, 2, 0]), torch.tensor([3, 3, 1]))
    yield Sample("impossible zero_infinity", (_log_probs(make, 5, 3, 5), *imp), {"zero_infinity": True})
    yield Sample("impossible zero_infinity none", (_log_probs(make, 5, 3, 5), *imp),
                 {"zero_infinity": True, "reduction": "none"})
    yield Sample("impossible inf", (_log_probs(make, 5, 3, 5), *imp), {"reduction": "none"}, gradcheck=False)
    yield Sample("int32 lengths and targets", (_log_probs(make, 4, 2, 3), torch.tensor([[1, 2], [2, 2]]).int(),
                                               torch.tensor([4, 3]).int(), torch.tensor([2, 1]).int()))
    yield Sample("large-magnitude", (_log_probs(make, 5, 2, 4) * 30, torch.tensor([[1, 2], [3, 1]]), [5, 5], [2, 2]),
                 {"reduction": "sum"}, gradcheck=False)


@module_samples("ctc_loss")
def _ctc_mod(make):
    lp = _log_probs(make, 6, 3, 5)
    tg, il, tl = torch.tensor([[1, 2, 2], [3, 4, 0], [1, 0, 0]]), torch.tensor([6, 5, 2]), torch.tensor([3, 2, 1])
    yield ModuleSample("mean", (), {}, (lp, tg, il, tl))
    yield ModuleSample("sum blank=4", (), {"blank": 4, "reduction": "sum"}, (lp, tg - 1, il, tl))
    yield ModuleSample("none zero_infinity", (), {"zero_infinity": True, "reduction": "none"},
                       (lp, tg, torch.tensor([6, 5, 0]), tl))


@error_samples("ctc_loss")
def _ctc_err(make):
    lp = _log_probs(Make(torch.float32), 5, 2, 4)
    tg, il, tl = torch.tensor([[1, 2], [3, 1]]), torch.tensor([5, 4]), torch.tensor([2, 1])
    yield Sample("bfloat16", (lp.detach().bfloat16(), tg, il, tl))
    yield Sample("complex", (lp.detach().to(torch.complex64), tg, il, tl))
    yield Sample("bad reduction", (lp, tg, il, tl), {"reduction": "avg"})
    yield Sample("mixed lengths", (lp, tg, [5, 4], tl))
    yield Sample("int lengths", (lp, tg, 5, 2))
    yield Sample("float lengths", (lp, tg, il.float(), tl))
    yield Sample("input_length > T", (lp, tg, torch.tensor([6, 4]), tl))
    yield Sample("negative input_length", (lp, tg, torch.tensor([-1, 4]), tl))
    yield Sample("negative target_length", (lp, tg, il, torch.tensor([2, -1])))
    yield Sample("target_length > S", (lp, tg, il, torch.tensor([3, 1])))
    yield Sample("input_lengths size", (lp, tg, il[:1], tl))
    yield Sample("target_lengths size", (lp, tg, il, tl[:1]))
    yield Sample("blank out of range", (lp, tg, il, tl), {"blank": 4})
    yield Sample("negative blank", (lp, tg, il, tl), {"blank": -1})
    yield Sample("concatenated size", (lp, torch.tensor([1, 2, 3, 1]), il, tl))
    yield Sample("targets batch", (lp, tg[:1], il, tl))
    yield Sample("3-d targets", (lp, tg.unsqueeze(0), il, tl))
    yield Sample("4-d log_probs", (lp.unsqueeze(0), tg, il, tl))
    yield Sample("empty", (lp[:, :0], tg[:0], il[:0], tl[:0]))


# --- adaptive_log_softmax_with_loss (the module's forward as a function of its parameters) ---
def _asm_params(make, d=6, cutoffs=(3, 6, 9), div=2.0, bias=False):
    """The parameters of AdaptiveLogSoftmaxWithLoss(d, cutoffs[-1], cutoffs[:-1], div_value=div)."""
    head = make(cutoffs[0] + len(cutoffs) - 1, d, low=-1, high=1)
    tail = []
    for i, (lo, hi) in enumerate(zip(cutoffs[:-1], cutoffs[1:])):
        hsz = int(d // div ** (i + 1))
        tail += [make(hsz, d, low=-1, high=1), make(hi - lo, hsz, low=-1, high=1)]
    return head, tail, list(cutoffs), (make(head.shape[0], low=-1, high=1) if bias else None)


@samples("adaptive_log_softmax_with_loss")
def _asm(make):
    head, tail, cut, _ = _asm_params(make)
    yield Sample("every cluster", (make(7, 6), torch.tensor([0, 2, 3, 5, 6, 8, 4]), head, tail, cut))
    head, tail, cut, b = _asm_params(make, bias=True)
    yield Sample("head bias, cluster 2 unused", (make(5, 6), torch.tensor([1, 4, 0, 5, 2]), head, tail, cut),
                 {"head_bias": b})
    head, tail, cut, _ = _asm_params(make, d=4, cutoffs=(2, 5), div=1.0)
    yield Sample("one cluster, shortlist only", (make(3, 4), torch.tensor([0, 1, 1]), head, tail, cut))
    yield Sample("unbatched", (make(4), torch.tensor(3), head, tail, cut))
    # the mean over no rows is nan (as torch's): finite differences are nan too
    yield Sample("empty batch", (make(0, 4), torch.zeros(0, dtype=torch.int64), head, tail, cut), gradcheck=False)
    yield Sample("input-no-grad", (make(3, 4, requires_grad=False), torch.tensor([4, 2, 0]), head, tail, cut))


@module_samples("adaptive_log_softmax_with_loss")
def _asm_mod(make):
    yield ModuleSample("every cluster", (6, 9, [3, 6]), {"div_value": 2.0},
                       (make(7, 6), torch.tensor([0, 2, 3, 5, 6, 8, 4])))
    yield ModuleSample("head_bias", (8, 10, [4]), {"head_bias": True}, (make(5, 8), torch.tensor([9, 1, 4, 0, 7])))
    yield ModuleSample("unbatched", (6, 9, [3, 6]), {"div_value": 2.0}, (make(6), torch.tensor(7)))


@error_samples("adaptive_log_softmax_with_loss")
def _asm_err(make):
    head, tail, cut, _ = _asm_params(make)
    yield Sample("target out of range", (make(3, 6), torch.tensor([0, 9, 2]), head, tail, cut))
    yield Sample("negative target", (make(3, 6), torch.tensor([0, -1, 2]), head, tail, cut))
    yield Sample("2-d target", (make(3, 6), torch.tensor([[0, 1, 2]]), head, tail, cut))
    yield Sample("batch mismatch", (make(3, 6), torch.tensor([0, 1]), head, tail, cut))
    yield Sample("3-d input", (make(3, 2, 6), torch.tensor([0, 1, 2]), head, tail, cut))
    yield Sample("0-d target, 2-d input", (make(3, 6), torch.tensor(1), head, tail, cut))
    yield Sample("wrong features", (make(3, 5), torch.tensor([0, 1, 2]), head, tail, cut))
