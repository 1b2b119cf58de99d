"""mIoU (torchmetrics) against DFAD's confusion-matrix definition, and the focal loss by hand."""
import math

import numpy as np
import pytest
import torch

from kdvision.segmentation.evaluation import MIoUEvaluator, confusion_matrix, confusion_matrix_miou
from kdvision.segmentation.task import focal_loss


def test_focal_loss_by_hand():
    logits = torch.zeros(1, 2, 1, 2)  # two pixels, two classes, p = 0.5 everywhere
    target = torch.tensor([[[0, 255]]])  # the second pixel is ignored but counts in the mean
    want = (1 - 0.5) ** 2 * math.log(2) / 2
    assert focal_loss(logits, target).item() == pytest.approx(want, rel=1e-5)
    confident = torch.tensor([[[[4.0]], [[0.0]]]])  # p(class 0) = e^4 / (e^4 + 1)
    ce = math.log1p(math.exp(-4))
    assert focal_loss(confident, torch.tensor([[[0]]])).item() == pytest.approx((1 - math.exp(-ce)) ** 2 * ce, rel=1e-5)
    assert focal_loss(confident, torch.tensor([[[0]]]), gamma=0).item() == pytest.approx(ce, rel=1e-5)  # plain CE


def test_confusion_matrix_miou_by_hand():
    target = torch.tensor([0, 0, 1, 1, 255, 2])
    pred = torch.tensor([0, 1, 1, 1, 0, 0])
    conf = confusion_matrix(pred, target, 4)
    assert conf.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    # IoU: class 0 1/(2+2-1), class 1 2/(2+3-2), class 2 0/(1+0-0), class 3 absent -> nan (excluded)
    scores = confusion_matrix_miou(conf)
    assert scores["miou"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert scores["pixel_acc"] == pytest.approx(3 / 5)


class _Masks(torch.utils.data.Dataset):
    """Fixed 'predictions' as one-hot logits: the evaluator's argmax gives them back."""

    class spec:
        num_classes = 11

    def __init__(self, preds, masks):
        self.preds, self.masks = preds, masks

    def __len__(self):
        return len(self.masks)

    def __getitem__(self, i):
        return torch.nn.functional.one_hot(self.preds[i], 11).permute(2, 0, 1).float(), self.masks[i]


def _camvid_masks(shared_data, n=6):
    from PIL import Image

    files = sorted((shared_data / "CamVid" / "testannot").glob("*.png"))[:n]
    if not files:
        pytest.skip("CamVid subset not found in the shared data folder")
    masks = torch.from_numpy(np.stack([np.array(Image.open(f)) for f in files])).long()
    masks[masks == 11] = 255
    return masks


@pytest.mark.parametrize("noise", [0.0, 0.3, 0.9])
def test_torchmetrics_miou_equals_confusion_matrix_miou_on_camvid(shared_data, noise):
    masks = _camvid_masks(shared_data)
    g = torch.Generator().manual_seed(0)
    preds = masks.clone()
    preds[preds == 255] = 0
    flip = torch.rand(masks.shape, generator=g) < noise
    preds[flip] = torch.randint(0, 11, (int(flip.sum()),), generator=g)
    preds[:, :, :40] = 10  # a band of one class: every class appears in predictions or ground truth
    evaluator = MIoUEvaluator(_Masks(preds, masks), batch_size=4, device=torch.device("cpu"))
    got = evaluator(torch.nn.Identity())
    conf = sum(confusion_matrix(p, m, 11) for p, m in zip(preds, masks))
    want = confusion_matrix_miou(conf)
    assert got["miou"] == pytest.approx(want["miou"], abs=1e-6)
    assert got["pixel_acc"] == pytest.approx(want["pixel_acc"], abs=1e-6)
    if noise == 0.0:
        assert got["pixel_acc"] < 1.0  # the band is wrong where the ground truth is not class 10


def test_absent_classes_are_excluded_like_nanmean():
    masks = torch.zeros(2, 4, 4, dtype=torch.long)
    masks[:, :2] = 3
    preds = masks.clone()
    preds[0, 0, 0] = 1  # class 1: predicted once, never true -> IoU 0, counted
    evaluator = MIoUEvaluator(_Masks(preds, masks), batch_size=2, device=torch.device("cpu"))
    got = evaluator(torch.nn.Identity())["miou"]
    want = confusion_matrix_miou(sum(confusion_matrix(p, m, 11) for p, m in zip(preds, masks)))["miou"]
    assert got == pytest.approx(want) and got == pytest.approx((1.0 + 0.0 + 15 / 16) / 3)


def test_core_finds_segmentation_entries_through_the_plugin_entry_point():
    import subprocess
    import sys

    code = ("import sys; from kdvision.core.models import create_model, list_models; "
            "from kdvision.core.data import dataset_spec; "
            "assert 'kdvision.segmentation' not in sys.modules; "
            "m = create_model('deeplabv3_mobilenetv2', num_classes=11); "
            "print(type(m).__module__, dataset_spec('nyu').num_classes, sorted(list_models(task='segmentation')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    module, classes, names = out.stdout.split(" ", 2)
    assert module.startswith("kdvision.segmentation") and classes == "13"
    assert "deeplabv3_resnet50" in names and "lenet5" not in names
