"""Fine-tune a Hugging Face BERT classifier, converted to torch_bp, with Lightning and the gradient monitor.

The model is built from a tiny ``BertConfig`` (no download) and converted with
``torch_bp.convert``: its Linear, LayerNorm, Embedding, Dropout and Tanh layers then run
torch_bp's backward rules, whose error signals the GradientMonitor logs, and GradientCheck
compares them with torch autograd's every 50 steps. The data is a toy sentiment set bundled
with the examples (``examples/data/toy_sentiment.tsv``), tokenized by words.

    .venv/bin/python examples/hf_tiny_bert.py          # 6 epochs, about a minute on a CPU
    .venv/bin/python examples/hf_tiny_bert.py --tiny   # a few steps (what CI runs)
    tensorboard --logdir runs/examples                 # the bp/ section: gradients, error signals

Needs ``pip install transformers`` (in the project's dev extra).
"""
from __future__ import annotations

import argparse
import os

import lightning.pytorch as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset
from transformers import BertConfig, BertForSequenceClassification

import torch_bp
from torch_bp.lightning import GradientCheck, GradientMonitor, log_hparams, run_hparams

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "toy_sentiment.tsv")
PAD, CLS, UNK = 0, 1, 2


def load(path: str = DATA) -> tuple[list[str], list[int]]:
    rows = [line.rstrip("\n").split("\t") for line in open(path) if line.strip() and not line.startswith("#")]
    return [text for _, text in rows], [int(label) for label, _ in rows]


def word_vocab(texts: list[str]) -> dict[str, int]:
    words = sorted({w for t in texts for w in t.split()})
    return {w: i + 3 for i, w in enumerate(words)}


def encode(texts: list[str], vocab: dict[str, int], length: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] w1 w2 ... padded to ``length``: (input_ids, attention_mask), both (N, length)."""
    ids = torch.full((len(texts), length), PAD)
    for i, t in enumerate(texts):
        tokens = [CLS] + [vocab.get(w, UNK) for w in t.split()][:length - 1]
        ids[i, :len(tokens)] = torch.tensor(tokens)
    return ids, (ids != PAD).long()


class SentimentClassifier(L.LightningModule):
    def __init__(self, vocab_size: int, hidden: int = 32, layers: int = 2, lr: float = 3e-3):
        super().__init__()
        self.save_hyperparameters()
        config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=32,
                            num_labels=2)
        self.model = torch_bp.convert(BertForSequenceClassification(config))

    def training_step(self, batch, batch_idx):
        ids, mask, y = batch
        loss = self.model(input_ids=ids, attention_mask=mask, labels=y).loss
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        ids, mask, y = batch
        out = self.model(input_ids=ids, attention_mask=mask, labels=y)
        self.log("val/loss", out.loss)
        self.log("val/acc", (out.logits.argmax(-1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="a few steps (CI)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--out", default="runs/examples", help="TensorBoard directory")
    a = p.parse_args(argv)
    L.seed_everything(0, verbose=False)
    texts, labels = load()
    vocab = word_vocab(texts)
    ids, mask = encode(texts, vocab)
    y = torch.tensor(labels)
    n_val = len(y) // 5
    train = TensorDataset(ids[n_val:], mask[n_val:], y[n_val:])
    val = TensorDataset(ids[:n_val], mask[:n_val], y[:n_val])
    model = SentimentClassifier(len(vocab) + 3)
    trainer = L.Trainer(max_epochs=1 if a.tiny else a.epochs, limit_train_batches=4 if a.tiny else 1.0,
                        limit_val_batches=1 if a.tiny else 1.0, accelerator="cpu", devices=1,
                        logger=TensorBoardLogger(a.out, name="hf_tiny_bert", default_hp_metric=False),
                        callbacks=[GradientMonitor(every_n_steps=2 if a.tiny else 5),
                                   GradientCheck(every_n_steps=2 if a.tiny else 50)],
                        log_every_n_steps=5, enable_checkpointing=False, enable_progress_bar=not a.tiny,
                        enable_model_summary=False)
    trainer.fit(model, DataLoader(train, batch_size=16, shuffle=True), DataLoader(val, batch_size=64))
    log_hparams(trainer, run_hparams(trainer, model))
    acc = float(trainer.callback_metrics["val/acc"])
    print(f"validation accuracy {acc:.1%} after {trainer.global_step} steps; logs: {trainer.logger.log_dir}")
    return {"val_acc": acc, "steps": trainer.global_step, "log_dir": trainer.logger.log_dir,
            "gradcheck": trainer.callbacks[1].history}


if __name__ == "__main__":
    main()
