"""What a task (classification, segmentation) plugs into the shared recipes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from ..data import find_split, get_dataset, is_embedded
from ..engine.distributed import DistInfo
from ..engine.runner import RunContext, check_data_root

Evaluator = Callable[[torch.nn.Module], dict[str, float]]


@dataclass
class TaskAdapter:
    """The task-specific pieces of a recipe.

    - ``name`` / ``metric``: written to ``summary.json`` (``"classification"``/``"acc"``, ``"segmentation"``/
      ``"miou"``); ``metric`` is also the key the evaluator returns and the one best checkpoints follow.
    - ``make_evaluator(dataset, batch_size, device, dist, workers, amp, channels_last)`` builds the evaluator of a
      labelled test dataset: ``evaluator(model) -> {metric: value, ...}``.
    - ``loss(logits, target)``: the supervised loss (teacher training); ``train_metrics(logits, target)`` extra
      device-tensor metrics logged during supervised training.
    - ``render(images, reference, model)``: a grid-ready float batch in [0, 1] showing ``images`` (normalised),
      the reference (a teacher module, or ground-truth targets) and what ``model`` makes of them; ``None`` shows
      the images alone. Evaluators that offer ``sample_batch() -> (images, targets)`` get grids during supervised
      training too.
    - ``teacher_options``: extra keywords for building the teacher (e.g. ``dropout=0`` for DeepLabV3).
    - ``dataset_options``: extra keywords for ``get_dataset`` (e.g. ``resize``/``crop_size``).
    """

    name: str
    metric: str
    make_evaluator: Callable[..., Evaluator]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    train_metrics: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]] | None = None
    render: Callable[[torch.Tensor, Any, torch.nn.Module], torch.Tensor] | None = None
    render_nrow: int = 8
    teacher_options: dict[str, Any] = field(default_factory=dict)
    dataset_options: Callable[[Any], dict[str, Any]] = lambda cfg: {}


def data_root_of(dataset: str, data_root: str | None) -> str | None:
    """The root to read ``dataset`` from (None for embedded datasets, which ignore it)."""
    return None if is_embedded(dataset) else data_root


def test_split_evaluator(ctx: RunContext, task: TaskAdapter, cfg: Any, *, dataset: str, normalize: str | None,
                         batch_size: int, workers: int, explicit_root: bool, warn_if_missing: str,
                         split: str = "test", wrap: Callable[[Dataset], Dataset] | None = None) -> Evaluator | None:
    """The task's evaluator on ``split`` of ``dataset``, or None (with one warning line) when it is not there.
    ``wrap`` maps the dataset to the one evaluated (another view of the same images).

    A data root the user named that does not exist is an error; a missing split only switches evaluation off.
    """
    root = data_root_of(dataset, cfg.data_root)
    if not check_data_root(root, explicit_root, lambda: find_split(dataset, root, split), dataset):
        ctx.log.warning(f"warning: no {dataset} {split} split under {root!r}; {warn_if_missing}")
        return None
    ds: Dataset = get_dataset(dataset, root, split=split, normalize=normalize, **task.dataset_options(cfg))
    if wrap is not None:
        ds = wrap(ds)
    dist: DistInfo = ctx.dist
    return task.make_evaluator(ds, batch_size, ctx.device, dist, workers, cfg.amp, cfg.channels_last)


def teacher_normalization(dataset: str, teacher: str, normalize: str | None
                          ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation a teacher expects: explicit ``--normalize`` > the teacher entry's own statistics > the
    dataset's."""
    from ..data import dataset_spec
    from ..data.normalization import normalization
    from ..models import model_info

    spec = dataset_spec(dataset)
    if normalize:
        return normalization(normalize, channels=spec.in_channels)
    info = model_info(teacher)
    if "mean" in info and "std" in info:
        return normalization((info["mean"], info["std"]), channels=spec.in_channels)
    return normalization((spec.mean, spec.std), channels=spec.in_channels)


def teacher_checkpoint(path: str | None, dataset: str, teacher: str) -> str:
    """The teacher checkpoint to load: ``path``, else CMI's released layout ``checkpoints/pretrained/{dataset}_{arch}
    .pth`` (also MosaicKD's); a missing file is a one-line error."""
    from pathlib import Path

    from ..errors import ConfigError

    path = path or f"checkpoints/pretrained/{dataset}_{teacher}.pth"
    if not Path(path).expanduser().is_file():
        raise ConfigError(f"teacher checkpoint not found: {path} (pass --teacher_weights PATH; CMI's released "
                          f"teachers are named {{dataset}}_{{arch}}.pth)")
    return path
