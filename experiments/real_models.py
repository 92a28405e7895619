"""Backward coverage of torch_bp on Hugging Face ``transformers`` models, before and after convert.

Each model is built from a tiny config (random init, nothing downloaded), run once on a
small batch with labels, and its backward graph is classified by
:func:`torch_bp.conversion_report` (see ``torch_bp/_coverage.py`` for what counts). Loss and
every parameter gradient of the converted model are compared with the original's (float64).

    python -m experiments.real_models            # prints the table, writes results/real_models.json
    python scripts/update_readme.py              # the table in README.md and docs/real-models.md
"""
from __future__ import annotations

import argparse
import json
import os

import torch

RESULTS = os.path.join(os.path.dirname(__file__), "results", "real_models.json")

B, T, V, H = 2, 8, 64, 32   # batch, sequence length, vocabulary, hidden size
IMG = 32                     # image side for the vision models


# The dtype below which a model's own arithmetic does not go, whatever the dtype it is run in:
# Llama/Mistral normalize in float32 (hidden_states.to(torch.float32)), T5LayerNorm takes its
# variance in float32, and the causal-LM loss is taken on logits.float().
PRECISION = {"llama": torch.float32, "mistral": torch.float32, "t5": torch.float32}

# Backward coverage reached after torch_bp.convert (float32), and the autograd ops still left:
# the tests assert at least this share and nothing outside these ops.
COVERAGE = {
    "llama": (1.0, ()), "mistral": (1.0, ()), "gpt2": (1.0, ()), "bert": (1.0, ()), "vit": (1.0, ()),
    "convnext": (1.0, ()), "resnet": (1.0, ()), "t5": (1.0, ()),
    # ReLU6 (hardtanh) and the TF-style "same" padding (F.pad): no torch_bp rule on this branch
    "mobilenet_v2": (0.55, ("HardtanhBackward0", "ConstantPadNdBackward0")),
}


def _text(cfg_cls, model_cls, **kw):
    def build():
        cfg = cfg_cls(**kw)
        return model_cls(cfg)

    def inputs(g):
        ids = torch.randint(0, V, (B, T), generator=g)
        return {"input_ids": ids, "labels": ids.clone()}
    return build, inputs


def _seq2seq(cfg_cls, model_cls, **kw):
    build, _ = _text(cfg_cls, model_cls, **kw)

    def inputs(g):
        return {"input_ids": torch.randint(0, V, (B, T), generator=g),
                "labels": torch.randint(0, V, (B, T // 2), generator=g)}
    return build, inputs


def _cls(cfg_cls, model_cls, text=True, **kw):
    def build():
        return model_cls(cfg_cls(**kw))

    def inputs(g):
        if text:
            return {"input_ids": torch.randint(0, V, (B, T), generator=g),
                    "labels": torch.randint(0, 3, (B,), generator=g)}
        return {"pixel_values": torch.randn(B, 3, IMG, IMG, generator=g),
                "labels": torch.randint(0, 3, (B,), generator=g)}
    return build, inputs


def models() -> dict:
    """name -> (build(), inputs(generator)); tiny configs (2 layers, hidden 32)."""
    import transformers as tr
    # dropout off everywhere: our dropout masks are not torch's, and the comparison is of the rules
    dec = dict(vocab_size=V, hidden_size=H, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=64)
    enc = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return {
        "llama": _text(tr.LlamaConfig, tr.LlamaForCausalLM, **dec),
        "mistral": _text(tr.MistralConfig, tr.MistralForCausalLM, **dec),
        "gpt2": _text(tr.GPT2Config, tr.GPT2LMHeadModel, vocab_size=V, n_embd=H, n_layer=2, n_head=4,
                      n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
        "t5": _seq2seq(tr.T5Config, tr.T5ForConditionalGeneration, vocab_size=V, d_model=H, d_kv=8, d_ff=64,
                       num_layers=2, num_heads=4, decoder_start_token_id=0, dropout_rate=0.0),
        "bert": _cls(tr.BertConfig, tr.BertForSequenceClassification, vocab_size=V, hidden_size=H,
                     num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_labels=3, **enc),
        "vit": _cls(tr.ViTConfig, tr.ViTForImageClassification, text=False, image_size=IMG, patch_size=8,
                    hidden_size=H, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_labels=3, **enc),
        "convnext": _cls(tr.ConvNextConfig, tr.ConvNextForImageClassification, text=False, num_channels=3,
                         hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=3),
        "mobilenet_v2": _cls(tr.MobileNetV2Config, tr.MobileNetV2ForImageClassification, text=False,
                             image_size=IMG, depth_multiplier=0.25, num_labels=3, classifier_dropout_prob=0.0),
        "resnet": _cls(tr.ResNetConfig, tr.ResNetForImageClassification, text=False, embedding_size=8,
                       hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=3),
    }


def _cast(inputs, dtype):
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}


def compare(name: str, dtype=torch.float64, seed: int = 0) -> dict:
    """Build ``name``, convert a copy; the same batch through both: coverage before/after, loss and
    parameter gradients of the converted model against the original's."""
    import copy

    import torch_bp
    build, inputs = models()[name]
    torch.manual_seed(seed)
    ref = build().to(dtype).train()
    ours = torch_bp.convert(copy.deepcopy(ref))
    x = _cast(inputs(torch.Generator().manual_seed(seed)), dtype)
    before = torch_bp.conversion_report(ref, x).backward
    after = torch_bp.conversion_report(ours, x).backward
    out_ref, out = ref(**x), ours(**x)
    out_ref.loss.backward()
    out.loss.backward()
    grads = {n: (p.grad, q.grad) for (n, p), (_, q) in zip(ref.named_parameters(), ours.named_parameters())}
    return {"model": name, "dtype": str(dtype).replace("torch.", ""), "loss_ref": out_ref.loss.item(),
            "loss": out.loss.item(), "before": before, "after": after, "grads": grads,
            "converted": torch_bp.conversion_report(ours)}


def coverage_row(name: str) -> dict:
    """Backward coverage of ``name`` (float32): unconverted, classes only (convert(functional=False)),
    and full convert; the ops and modules left to autograd; loss/gradient agreement (float64)."""
    import torch_bp
    from torch_bp.convert import _tol
    build, inputs = models()[name]
    torch.manual_seed(0)
    model = build().train()
    x = inputs(torch.Generator().manual_seed(0))
    rows = {}
    for label, m in (("unconverted", model), ("classes only", torch_bp.convert(model, functional=False)),
                     ("convert", torch_bp.convert(model))):
        rows[label] = torch_bp.conversion_report(m, x).backward
    after = rows["convert"]
    r = compare(name, torch.float64)
    t = _tol(PRECISION.get(name, torch.float64))
    grads_equal = all((a is None) == (b is None) and (a is None or torch.allclose(b, a, **t))
                      for a, b in r["grads"].values())
    mods = {}
    for (path, op), v in after.by_module.items():
        mods.setdefault(path, {})[op] = v
    return {"model": name, "unconverted": rows["unconverted"].share, "classes_only": rows["classes only"].share,
            "convert": after.share, "ours_nodes": after.ours, "autograd_nodes": after.autograd,
            "not_counted": dict(after.not_counted), "left_by_op": dict(after.by_op), "left_by_module": mods,
            "loss_equal": abs(r["loss"] - r["loss_ref"]) <= t["atol"] + t["rtol"] * abs(r["loss_ref"]),
            "grads_equal": grads_equal, "compared_at": str(PRECISION.get(name, torch.float64))}


def _pct(x):
    return f"{100 * x:.1f}%"


def table(rows) -> str:
    lines = ["| model | unconverted | classes only | convert | equal loss, grads | left to autograd (by op) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        left = ", ".join(f"{k} x{v}" for k, v in sorted(r["left_by_op"].items())) or "-"
        eq = "yes" if r["loss_equal"] and r["grads_equal"] else "NO"
        lines.append(f"| {r['model']} | {_pct(r['unconverted'])} | {_pct(r['classes_only'])} | "
                     f"**{_pct(r['convert'])}** | {eq} | {left} |")
    return "\n".join(lines)


def committed_table(path: str = RESULTS) -> str:
    """The table of the committed results (README.md and docs/real-models.md show it; regenerated by
    ``python scripts/update_readme.py``)."""
    with open(path) as f:
        res = json.load(f)
    versions = f"torch {res['torch']}" + (f", transformers {res['transformers']}" if "transformers" in res else "")
    return f"{table(res['rows'])}\n\n(`experiments/results/real_models.json`: {versions})"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args(argv)
    rows = [coverage_row(n) for n in (args.models or list(models()))]
    print(table(rows))
    result = {"torch": torch.__version__, "rows": rows}
    try:
        import transformers
        result["transformers"] = transformers.__version__
    except ImportError:
        pass
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
