import pytest, torch
from torchdata.stateful_dataloader import StatefulDataLoader
import torch_bp.lightning as tbl
from test_resume import _uninterrupted, _split, _assert_same_state, _compare_metrics, STEPS_PER_EPOCH, BATCH
from torch.utils.data import DataLoader

class StatefulDigits(tbl.DigitsDataModule):
    def _loader(self, ds, train):
        if not train:
            return DataLoader(ds, batch_size=self.batch_size)
        return StatefulDataLoader(ds, batch_size=self.batch_size, shuffle=self.shuffle,
                                  generator=torch.Generator().manual_seed(self.seed))

@pytest.mark.parametrize("stop", [STEPS_PER_EPOCH, STEPS_PER_EPOCH + 3], ids=["epoch-end", "mid-epoch"])
def test_stateful(tmp_path, tmp_path_factory, stop):
    whole_model, whole_opt, whole_metrics, _ = _uninterrupted(tmp_path_factory, StatefulDigits)
    model, opt, first, second = _split(tmp_path, stop, StatefulDigits)
    _assert_same_state(whole_model, whole_opt, model, opt)
    _compare_metrics(whole_metrics, first, second, stop)
    ckpt = torch.load(tmp_path / "ckpt" / f"step-{stop}.ckpt", weights_only=True)
