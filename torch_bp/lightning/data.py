"""Built-in LightningDataModules that need no download.

- :class:`DigitsDataModule`: scikit-learn's bundled 8x8 digits (1797 images, 10 classes),
  the CLI's default.
- The 1986 paper's tasks, from :mod:`torch_bp.datasets`: :class:`SymmetryDataModule`,
  :class:`FamilyTreesDataModule`, :class:`XORDataModule`, :class:`ParityDataModule`.
  Each trains on its full pattern set (full-batch sweeps by default, as in the paper) and
  validates on the same set, except family trees, which holds out ``n_test`` cases.

All are :class:`TensorDataModule`\\ s: in-memory tensors, so ``num_workers=0`` is right.
"""
from __future__ import annotations

from typing import Optional

import lightning.pytorch as L
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from torch_bp import datasets


class EpochShuffleSampler(Sampler):
    """The training order: random per epoch, a function of ``(seed, epoch)`` only.

    Lightning calls ``set_epoch`` at the start of every epoch, so a run resumed from a
    checkpoint sees the same order as an uninterrupted one (one torch.Generator drawn from
    epoch after epoch would replay epoch 0's order after a restart). ``shuffle=False`` keeps
    the dataset's order. ``skip`` leaves out the first examples of epoch ``skip_epoch`` once
    (set by :class:`ResumableDataLoader` to resume in the middle of an epoch).
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.epoch, self.skip, self.skip_epoch = 0, 0, -1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch))
        else:
            order = torch.arange(self.n)
        skip = self.skip if self.epoch == self.skip_epoch else 0
        self.skip, self.skip_epoch = 0, -1
        return iter(order[skip:].tolist())


class ResumableDataLoader(DataLoader):
    """A DataLoader with a state (epoch, batches given out this epoch) for Lightning's checkpoints.

    Lightning saves ``state_dict()`` with the loop and, on resume, calls ``load_state_dict``:
    the :class:`EpochShuffleSampler` then skips the batches already trained on, so a run
    stopped in the middle of an epoch goes on with the next batch. The state is two ints
    (checkpoints load with ``weights_only=True``). With another sampler (e.g. the
    DistributedSampler Lightning puts in under DDP) it is a plain DataLoader.
    """

    def __iter__(self):
        s = self.sampler
        if not isinstance(s, EpochShuffleSampler):
            yield from super().__iter__()
            return
        self._epoch = s.epoch
        self._done = s.skip // self.batch_size if s.epoch == s.skip_epoch else 0
        for batch in super().__iter__():
            self._done += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": getattr(self, "_epoch", 0), "batches": getattr(self, "_done", 0)}

    def load_state_dict(self, state: dict) -> None:
        if isinstance(self.sampler, EpochShuffleSampler) and state:
            self.sampler.skip_epoch, self.sampler.skip = state["epoch"], state["batches"] * self.batch_size


class TensorDataModule(L.LightningDataModule):
    """Base class: a subclass builds ``(x_train, y_train), (x_val, y_val)`` in :meth:`tensors`.

    Args:
        batch_size: examples per step (``None``: the whole training set, one step per epoch).
        shuffle: reshuffle the training set every epoch (an order that depends on ``(seed, epoch)``
            only, see :class:`EpochShuffleSampler`; with :class:`ResumableDataLoader` a run
            resumed from a checkpoint, even mid-epoch, sees the batches an uninterrupted one would).
        seed: seeds the split (where there is one) and the shuffling.
        num_workers: DataLoader workers.
    """

    num_features: int = 0
    num_outputs: int = 0

    def __init__(self, batch_size: Optional[int] = None, shuffle: bool = True, seed: int = 0, num_workers: int = 0):
        super().__init__()
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.num_workers = num_workers
        self.train_set: Optional[TensorDataset] = None
        self.val_set: Optional[TensorDataset] = None

    def tensors(self) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def setup(self, stage: str = "fit") -> None:
        if self.train_set is None:
            train, val = self.tensors()
            self.train_set, self.val_set = TensorDataset(*train), TensorDataset(*val)

    def _loader(self, ds: TensorDataset, train: bool) -> DataLoader:
        bs = self.batch_size or len(ds)
        if not train:
            return DataLoader(ds, batch_size=bs, num_workers=self.num_workers)
        return ResumableDataLoader(ds, batch_size=bs, sampler=EpochShuffleSampler(len(ds), self.seed, self.shuffle),
                                   num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.val_set, False)


class DigitsDataModule(TensorDataModule):
    """scikit-learn's bundled handwritten digits: 1797 8x8 images in [0, 1], 10 classes.

    Args:
        val_fraction: share of the images held out for validation (a seeded random split).
        flatten: give ``(N, 64)`` vectors instead of ``(N, 1, 8, 8)`` images.
        batch_size, shuffle, seed, num_workers: as :class:`TensorDataModule`.
    """

    num_features, num_outputs = 64, 10

    def __init__(self, batch_size: Optional[int] = 64, val_fraction: float = 0.2, flatten: bool = False,
                 shuffle: bool = True, seed: int = 0, num_workers: int = 0):
        super().__init__(batch_size, shuffle, seed, num_workers)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.val_fraction = val_fraction
        self.flatten = flatten

    def tensors(self):
        from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

        x, y = load_digits(return_X_y=True)
        x = torch.tensor(x, dtype=torch.get_default_dtype()) / 16.0   # pixel values are 0..16
        x = x if self.flatten else x.reshape(-1, 1, 8, 8)
        y = torch.tensor(y, dtype=torch.long)
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))
        n_val = round(self.val_fraction * len(x))
        val, train = perm[:n_val], perm[n_val:]
        return (x[train], y[train]), (x[val], y[val])


class SymmetryDataModule(TensorDataModule):
    """Mirror-symmetry detection (Nature Fig. 1): all ``2**n_bits`` patterns, target (N, 1) in {0, 1}."""

    num_outputs = 1

    def __init__(self, n_bits: int = 6, batch_size: Optional[int] = None, shuffle: bool = False,
                 seed: int = 0, num_workers: int = 0):
        super().__init__(batch_size, shuffle, seed, num_workers)
        self.n_bits = self.num_features = n_bits

    def tensors(self):
        x, y = datasets.symmetry(self.n_bits)
        return (x, y), (x, y)


class ParityDataModule(TensorDataModule):
    """N-bit parity (PDP ch. 8): all ``2**n_bits`` patterns, target 1 iff an odd number of bits is on."""

    num_outputs = 1

    def __init__(self, n_bits: int = 4, batch_size: Optional[int] = None, shuffle: bool = False,
                 seed: int = 0, num_workers: int = 0):
        super().__init__(batch_size, shuffle, seed, num_workers)
        self.n_bits = self.num_features = n_bits

    def tensors(self):
        x, y = datasets.parity(self.n_bits)
        return (x, y), (x, y)


class XORDataModule(ParityDataModule):
    """XOR: the 4 two-bit patterns (2-bit parity)."""

    def __init__(self, batch_size: Optional[int] = None, shuffle: bool = False, seed: int = 0, num_workers: int = 0):
        super().__init__(2, batch_size, shuffle, seed, num_workers)


class FamilyTreesDataModule(TensorDataModule):
    """Family trees (Nature Figs. 2-4): 104 (person, relation) cases -> multi-hot person 2.

    The input is the person-1 one-hot (24) and the relation one-hot (12) concatenated,
    ``(N, 36)`` (see :class:`~torch_bp.lightning.models.FamilyTreeNet`); the target is
    ``(N, 24)``, with two units on for the 8 cases that have two answers. ``n_test`` cases
    (single-answer ones, drawn with ``seed``) are held out for validation, as the paper's 4.
    """

    num_features, num_outputs = 36, 24

    def __init__(self, n_test: int = 4, batch_size: Optional[int] = None, shuffle: bool = False,
                 seed: int = 0, num_workers: int = 0):
        super().__init__(batch_size, shuffle, seed, num_workers)
        self.n_test = n_test

    def tensors(self):
        person, relation, target, _ = datasets.family_trees()
        x = torch.cat([person, relation], dim=1)
        train, test = datasets.family_trees_split(self.n_test, torch.Generator().manual_seed(self.seed))
        if len(test) == 0:
            test = train
        return (x[train], target[train]), (x[test], target[test])
