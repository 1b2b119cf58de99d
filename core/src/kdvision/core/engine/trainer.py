"""The one training engine: an epoch/step loop with a hook lifecycle.

Lifecycle (detectron2's ``HookBase``): ``before_train`` → for each epoch ``before_epoch`` → for each step
``before_step`` → ``after_step(outputs)`` → ``after_epoch`` → ``after_train``, the last called on every path
(``try``/``finally``: a diverged or interrupted run still closes its hooks). The method's LR schedules are applied
at each epoch start and before each step. Evaluation, checkpointing, logging, progress and sample grids are hooks;
a hook with state (``state_dict``/``load_state_dict``) is saved in ``last.pt`` and restored on ``--resume``.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..checkpoint import read_checkpoint, save_atomic
from ..errors import CheckpointError, KDVisionError
from .distributed import DistInfo
from .grid import save_image
from .method import Method, unwrap
from .rundir import RunDir, get_logger
from .seed import rng_state, set_rng_state

CKPT_FORMAT = "kdvision-train-state"
CKPT_VERSION = 1


class TrainingDiverged(KDVisionError):
    """A loss became NaN or infinite."""


@dataclass
class TrainState:
    epoch: int = 0  # completed epochs
    step: int = 0  # completed iterations
    best_metric: float | None = None
    last_metric: float | None = None
    train_time: float = 0.0  # seconds spent in training steps (evaluation excluded)
    is_best: bool = False


class Hook:
    priority = 50  # lower runs first

    def before_train(self, trainer: "Trainer") -> None: ...
    def before_epoch(self, trainer: "Trainer") -> None: ...
    def before_step(self, trainer: "Trainer") -> None: ...
    def after_step(self, trainer: "Trainer", outputs: dict[str, torch.Tensor]) -> None: ...
    def after_epoch(self, trainer: "Trainer") -> None: ...
    def after_train(self, trainer: "Trainer") -> None: ...

    @property
    def state_key(self) -> str:
        """Name of this hook's entry in a checkpoint's ``hooks`` (one hook per class by default)."""
        return type(self).__name__

    def state_dict(self) -> dict[str, Any] | None:
        """Checkpointed state (None: stateless)."""
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Trainer:
    def __init__(self, method: Method, *, epochs: int, iters_per_epoch: int, run: RunDir,
                 dist: DistInfo = DistInfo(), hooks: list[Hook] | None = None, config: dict[str, Any] | None = None,
                 visdom: Any = None) -> None:
        if epochs < 1 or iters_per_epoch < 1:
            raise KDVisionError(f"epochs ({epochs}) and iterations per epoch ({iters_per_epoch}) must be >= 1")
        self.method = method
        self.epochs = epochs
        self.iters_per_epoch = iters_per_epoch
        self.run = run
        self.dist = dist
        self.config = config or {}
        self.visdom = visdom
        self.state = TrainState()
        self.epoch_metrics: dict[str, float] = {}
        self.hooks = sorted(hooks or [], key=lambda h: h.priority)
        self.log = get_logger()

    # -- checkpoints ------------------------------------------------------------------------------------------------
    def checkpoint(self) -> dict[str, Any]:
        st = self.state
        ckpt = {"format": CKPT_FORMAT, "version": CKPT_VERSION, "method": self.method.name,
                "epoch": st.epoch, "step": st.step, "best_metric": st.best_metric, "last_metric": st.last_metric,
                "train_time": st.train_time, "method_state": self.method.state_dict(), "rng": rng_state(),
                "config": self.config, "hooks": self.hook_states()}
        # So that ``load_weights(model, "last.pt")`` reads the tracked model (student or teacher) directly; the
        # tensors are shared with method_state, so torch.save stores them once.
        ckpt["state_dict"] = unwrap(self.method.eval_model()).state_dict()
        return ckpt

    def hook_states(self) -> dict[str, Any]:
        states = {h.state_key: h.state_dict() for h in self.hooks}
        return {k: v for k, v in states.items() if v is not None}

    def save(self, path: Path) -> None:
        if self.dist.is_main:
            save_atomic(self.checkpoint(), path)

    def resume(self, path: str | Path) -> None:
        ckpt = read_checkpoint(path)
        if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
            raise CheckpointError(f"{path} is not a kdvision training checkpoint (cannot resume from it)")
        if ckpt["method"] != self.method.name:
            raise CheckpointError(f"{path} was written by method {ckpt['method']!r}, not {self.method.name!r}")
        try:
            self.method.load_state_dict(ckpt["method_state"])
        except (RuntimeError, KeyError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"{path} does not match this run's players: {first}") from exc
        for hook in self.hooks:
            if hook.state_key in ckpt.get("hooks", {}):
                hook.load_state_dict(ckpt["hooks"][hook.state_key])
        st = self.state
        st.epoch, st.step = ckpt["epoch"], ckpt["step"]
        st.best_metric, st.last_metric, st.train_time = ckpt["best_metric"], ckpt["last_metric"], ckpt["train_time"]
        if self.dist.is_main:
            set_rng_state(ckpt["rng"])
        else:  # other ranks: a distinct, reproducible stream per (rank, epoch)
            torch.manual_seed(hash((self.config.get("seed", 0), self.dist.rank, st.epoch)) % 2**31)
        self.log.info(f"resumed from {path} at epoch {st.epoch} (step {st.step})")

    # -- loop -----------------------------------------------------------------------------------------------------
    def _call(self, event: str, *args: Any) -> None:
        for hook in self.hooks:
            getattr(hook, event)(self, *args)

    def fit(self) -> TrainState:
        try:
            self._call("before_train")
            self._loop()
        finally:
            self._call("after_train")
        return self.state

    def _loop(self) -> None:
        sync = torch.cuda.synchronize if self.method.device.type == "cuda" else (lambda: None)
        schedules = self.method.schedules
        while self.state.epoch < self.epochs:
            self.state.is_best = False
            self.epoch_metrics = {}
            schedules.epoch_start(self.state.epoch, self.state.step)
            self.method.on_epoch_start(self.state.epoch)
            self._call("before_epoch")
            sync()
            t0 = time.perf_counter()
            for _ in range(self.iters_per_epoch):
                schedules.step_start(self.state.epoch, self.state.step)
                self._call("before_step")
                outputs = self.method.train_step()
                self.state.step += 1
                self._call("after_step", outputs)
            sync()
            self.state.train_time += time.perf_counter() - t0
            self.state.epoch += 1
            self._call("after_epoch")


# ---------------------------------------------------------------------------------------------------------------
# Built-in hooks
# ---------------------------------------------------------------------------------------------------------------
class LoggerHook(Hook):
    """Accumulates step outputs on the device; every ``interval`` steps reads them once (the only host sync),
    checks for NaN/Inf, and writes console, metrics.jsonl, Visdom and the progress bar."""

    priority = 10

    def __init__(self, interval: int = 10, progress: bool | None = None) -> None:
        self.interval = max(1, interval)
        self.progress = sys.stderr.isatty() if progress is None else progress
        self._sums: dict[str, torch.Tensor] = {}
        self._count = 0
        self._bar = None
        self._epoch = 1
        self._mark = time.perf_counter()  # start of the steps being accumulated (for the throughput)

    def before_epoch(self, trainer: Trainer) -> None:
        self._epoch = trainer.state.epoch + 1  # 1-based epoch being trained
        self._mark = time.perf_counter()  # evaluation, grids and checkpoints of the last epoch are not counted
        if self.progress and trainer.dist.is_main:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=trainer.iters_per_epoch, desc=f"epoch {trainer.state.epoch + 1}/{trainer.epochs}",
                             leave=False, dynamic_ncols=True, mininterval=0.5)

    def after_step(self, trainer: Trainer, outputs: dict[str, torch.Tensor]) -> None:
        for k, v in outputs.items():
            v = v.detach().float()
            self._sums[k] = self._sums[k] + v if k in self._sums else v.clone()
        self._count += 1
        if self._bar is not None:
            self._bar.update(1)
        if self._count >= self.interval:
            self.flush(trainer)

    def flush(self, trainer: Trainer) -> None:
        if not self._count:
            return
        names = list(self._sums)
        values = (torch.stack([self._sums[k] for k in names]) / self._count).tolist()  # one sync
        means = dict(zip(names, values))
        now = time.perf_counter()  # after the sync: the steps of this window have finished
        rate = self._count / (now - self._mark) if now > self._mark else None
        self._mark = now
        self._sums, self._count = {}, 0
        bad = [k for k, v in means.items() if not math.isfinite(v)]
        if bad:
            raise TrainingDiverged(
                f"loss {', '.join(bad)} became {means[bad[0]]} at step {trainer.state.step} (epoch "
                f"{self._epoch}); last good checkpoint: {trainer.run.last_ckpt}")
        st = trainer.state
        epoch = self._epoch
        means.update(trainer.method.schedules.lrs())  # the learning rates the last step used
        speed = {"iters_per_s": rate} if rate is not None else {}  # training steps per second over the window
        trainer.run.log_metrics({"step": st.step, "epoch": epoch, "split": "train", **means, **speed})
        if trainer.visdom is not None:
            trainer.visdom.scalars(st.step, {**means, **speed}, "train")
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in means.items()}, refresh=False)
        elif trainer.dist.is_main:
            msg = " ".join(f"{k}={v:.4g}" for k, v in means.items())
            trainer.log.info(f"epoch {epoch} step {st.step}: {msg}")

    def after_epoch(self, trainer: Trainer) -> None:
        self.flush(trainer)
        self.after_train(trainer)

    def after_train(self, trainer: Trainer) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class EvalHook(Hook):
    """Evaluates the tracked model every ``every`` epochs (and after the last) and keeps the best metric."""

    priority = 20

    def __init__(self, evaluate: Callable[[torch.nn.Module], dict[str, float]], metric: str, every: int = 1) -> None:
        self.evaluate = evaluate
        self.metric = metric
        self.every = max(1, every)

    def after_epoch(self, trainer: Trainer) -> None:
        st = trainer.state
        if st.epoch % self.every and st.epoch != trainer.epochs:
            return
        results = self.evaluate(trainer.method.eval_model())
        value = results[self.metric]
        st.last_metric = value
        if st.best_metric is None or value > st.best_metric:
            st.best_metric, st.is_best = value, True
        trainer.epoch_metrics = results
        trainer.run.log_metrics({"step": st.step, "epoch": st.epoch, "split": "test", **results,
                                 f"best_{self.metric}": st.best_metric})
        if trainer.visdom is not None:
            trainer.visdom.scalars(st.step, results, "test")
        extra = " ".join(f"{k}={v:.4f}" for k, v in results.items() if k != self.metric)
        trainer.log.info(f"epoch {st.epoch}/{trainer.epochs}: test {self.metric}={value:.4f} "
                         f"(best {st.best_metric:.4f}){' ' + extra if extra else ''}")


class CheckpointHook(Hook):
    """Writes ``last.pt`` after every epoch and ``best.pt`` on a new best metric (atomically, rank 0 only).

    It runs after every other hook's ``after_epoch``, so the checkpoint holds the hooks' state as of the epoch's end
    (a hook that wrote files in this epoch has counted them when its state is saved).
    """

    priority = 90

    def after_epoch(self, trainer: Trainer) -> None:
        trainer.save(trainer.run.last_ckpt)
        if trainer.state.is_best:
            trainer.save(trainer.run.best_ckpt)


class SampleGridHook(Hook):
    """Saves a grid of what ``render(method)`` shows to ``samples/epoch_XXXX.png`` (and ``samples/last.png``).

    ``render`` returns a float batch in [0, 1] (or None): the method's synthetic samples denormalised
    (:func:`sample_renderer`), or for segmentation the samples next to teacher and student predictions.
    """

    priority = 40

    def __init__(self, render: Callable[[Method], torch.Tensor | None], every: int = 1, nrow: int = 8) -> None:
        self.render = render
        self.every = max(1, every)
        self.nrow = nrow

    def after_epoch(self, trainer: Trainer) -> None:
        st = trainer.state
        if not trainer.dist.is_main or (st.epoch % self.every and st.epoch != trainer.epochs):
            return
        images = self.render(trainer.method)
        if images is None:
            return
        images = images.detach().float().cpu()
        for name in (f"epoch_{st.epoch:04d}.png", "last.png"):
            save_image(images, trainer.run.samples / name, nrow=self.nrow, padding=2)
        if trainer.visdom is not None:
            trainer.visdom.images("samples", images, caption=f"epoch {st.epoch}", nrow=self.nrow)


def sample_renderer(mean: tuple[float, ...], std: tuple[float, ...],
                    show: Callable[[torch.Tensor, Method], torch.Tensor] | None = None
                    ) -> Callable[[Method], torch.Tensor | None]:
    """``render`` for :class:`SampleGridHook`: ``method.sample_images()`` denormalised to [0, 1], or passed with
    the method to ``show(images, method)`` (which returns the grid batch itself) when given."""

    def render(method: Method) -> torch.Tensor | None:
        images = method.sample_images()
        if images is None:
            return None
        if show is not None:
            return show(images, method)
        return denormalize(images.detach().float().cpu(), mean, std)

    return render


def denormalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Normalised images back to [0, 1] for display."""
    c = x.shape[1]
    m = torch.tensor(mean, dtype=x.dtype).expand(c).view(1, c, 1, 1) if len(mean) in (1, c) else None
    s = torch.tensor(std, dtype=x.dtype).expand(c).view(1, c, 1, 1) if len(std) in (1, c) else None
    if m is None or s is None:
        raise ValueError(f"normalisation of {len(mean)} channels does not fit images with {c}")
    return (x * s + m).clamp_(0, 1)
