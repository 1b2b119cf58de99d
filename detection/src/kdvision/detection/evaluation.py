"""Detection evaluation: Pascal-VOC-style average precision (written from the VOC devkit's documented rules) and,
optionally, COCO AP through torchmetrics' ``MeanAveragePrecision`` (pycocotools backend).

VOC rules, per class: detections of all images sorted by score; a detection is a true positive when its best-IoU
ground truth box of that class (same image) reaches the threshold and was not taken by a higher-scored detection;
a match to a ``difficult`` box counts neither way; ``npos`` counts the non-difficult boxes. AP is the area under the
interpolated precision/recall curve (all points, VOC2010+), or the 11-point mean for VOC2007 (``use_07``; Detectron2's
``PascalVOCDetectionEvaluator`` uses it for ``voc_2007_*``). Boxes are compared with the continuous IoU (Detectron2's
VOC evaluator adds 1 pixel to widths as the devkit did; the difference is negligible beyond tiny boxes). Metrics are
fractions in [0, 1]: ``ap50`` (AP at IoU 0.5, VOC's metric), ``ap75`` and ``ap`` (mean over IoU 0.50:0.05:0.95),
averaged over the classes that have ground truth.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .data import collate

THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07: bool = False) -> float:
    if use_07:
        return float(np.mean([precision[recall >= t].max() if np.any(recall >= t) else 0.0
                              for t in np.linspace(0, 1, 11)]))
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a`` (N×4) against ``b`` (M×4), xyxy."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]).clip(0) * (x[:, 3] - x[:, 1]).clip(0)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-12)


def class_ap(preds: Sequence[dict], gts: Sequence[dict], label: int, threshold: float, use_07: bool = False
             ) -> float | None:
    """AP of one class at one IoU threshold; None when the class has no non-difficult ground truth."""
    gt_boxes, gt_diff, taken = {}, {}, {}
    npos = 0
    for i, g in enumerate(gts):
        m = g["labels"] == label
        gt_boxes[i], gt_diff[i] = g["boxes"][m], g["difficult"][m]
        taken[i] = np.zeros(int(m.sum()), dtype=bool)
        npos += int((~gt_diff[i]).sum())
    if npos == 0:
        return None
    dets = [(float(s), i, b) for i, p in enumerate(preds)
            for b, s in zip(p["boxes"][p["labels"] == label], p["scores"][p["labels"] == label])]
    dets.sort(key=lambda d: -d[0])
    tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
    for k, (_, i, box) in enumerate(dets):
        boxes = gt_boxes[i]
        if len(boxes) == 0:
            fp[k] = 1
            continue
        ious = _iou(box[None], boxes)[0]
        j = int(ious.argmax())
        if ious[j] >= threshold:
            if gt_diff[i][j]:
                continue  # a difficult box: neither true nor false positive
            if not taken[i][j]:
                tp[k], taken[i][j] = 1, True
            else:
                fp[k] = 1
        else:
            fp[k] = 1
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / npos
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap(recall, precision, use_07)


def voc_metrics(preds: Sequence[dict], gts: Sequence[dict], num_classes: int, use_07: bool = False
                ) -> dict[str, float]:
    """``ap50``, ``ap75``, ``ap`` over classes 1..num_classes with ground truth (numpy arrays in the dicts)."""
    per_t = {}
    for t in THRESHOLDS:
        aps = [class_ap(preds, gts, c, t, use_07) for c in range(1, num_classes + 1)]
        aps = [a for a in aps if a is not None]
        per_t[t] = float(np.mean(aps)) if aps else float("nan")
    return {"ap50": per_t[0.5], "ap75": per_t[0.75], "ap": float(np.mean(list(per_t.values())))}


def coco_backend() -> str | None:
    """The torchmetrics MeanAveragePrecision backend available here (None: COCO AP is not computed)."""
    for module, name in (("pycocotools", "pycocotools"), ("faster_coco_eval", "faster_coco_eval")):
        try:
            __import__(module)
            return name
        except ImportError:
            continue
    return None


def coco_metrics(preds: Sequence[dict], gts: Sequence[dict], backend: str) -> dict[str, float]:
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend=backend)
    metric.update([{k: torch.as_tensor(p[k]) for k in ("boxes", "scores", "labels")} for p in preds],
                  [{"boxes": torch.as_tensor(g["boxes"]), "labels": torch.as_tensor(g["labels"]),
                    "iscrowd": torch.as_tensor(g["difficult"]).long()} for g in gts])
    out = metric.compute()
    return {"coco_ap": float(out["map"]), "coco_ap50": float(out["map_50"]), "coco_ap75": float(out["map_75"])}


class DetectionEvaluator:
    """``evaluator(model) -> {"ap50", "ap75", "ap"[, "coco_ap", ...]}`` on a detection test set."""

    def __init__(self, dataset: Dataset, *, num_classes: int, device: torch.device, batch_size: int = 2,
                 workers: int = 0, use_07: bool = False, min_size: int | None = None, coco: bool = False,
                 amp: bool = False) -> None:
        self.dataset, self.num_classes, self.device = dataset, num_classes, device
        self.loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                 collate_fn=collate)
        self.use_07, self.min_size, self.amp = use_07, min_size, amp
        self.backend = coco_backend() if coco else None

    @torch.no_grad()
    def predict(self, model: torch.nn.Module) -> tuple[list[dict], list[dict]]:
        was_training = model.training
        transform = getattr(model, "transform", None)
        saved = getattr(transform, "min_size", None)
        if transform is not None and self.min_size is not None:
            transform.min_size = (self.min_size,)
        model.eval()
        preds, gts = [], []
        try:
            for images, targets in self.loader:
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                    out = model([im.to(self.device, non_blocking=True) for im in images])
                for o, t in zip(out, targets):
                    preds.append({"boxes": o["boxes"].float().cpu().numpy(), "scores": o["scores"].float().cpu().numpy(),
                                  "labels": o["labels"].cpu().numpy()})
                    gts.append({"boxes": t["boxes"].numpy(), "labels": t["labels"].numpy(),
                                "difficult": t["difficult"].numpy()})
        finally:
            if transform is not None and saved is not None:
                transform.min_size = saved
            model.train(was_training)
        return preds, gts

    def __call__(self, model: torch.nn.Module) -> dict[str, Any]:
        preds, gts = self.predict(model)
        metrics = voc_metrics(preds, gts, self.num_classes, self.use_07)
        if self.backend is not None:
            metrics.update(coco_metrics(preds, gts, self.backend))
        return metrics
