"""Glue shared by every entry script: device, distributed set-up, seeding, run directory, trainer, summary."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import DataError, KDVisionError
from .config import RunConfig, to_dict
from .distributed import DistInfo, cleanup, init_distributed, rank_spread, resolve_device
from .method import Method
from .rundir import RunDir, choose_output, clear_run, get_logger, git_commit, init_logging, package_versions
from .seed import seed_everything
from .trainer import CheckpointHook, EvalHook, Hook, LoggerHook, SampleGridHook, Trainer, sample_renderer


def check_data_root(data_root: str | None, explicit: bool, has_split: Callable[[], bool], what: str) -> bool:
    """Whether evaluation data is available.

    A data root the user named that does not exist is an error (a typo must not silently turn evaluation off);
    a missing split, or a missing default root, is reported by the caller as one warning.
    """
    if data_root is None:  # embedded datasets need no root
        return has_split()
    if not Path(data_root).exists():
        if explicit:
            raise DataError(f"data root not found: {data_root}")
        return False
    return has_split()


class RunContext:
    """Device, processes, seeding and logging of one run; the run directory once the inputs are known to be good.

    The output directory is chosen (and a directory holding another run refused) at construction, so a bad
    ``--output`` fails before any model is built; it is created only by :meth:`open_run`.
    """

    def __init__(self, cfg: RunConfig, *, script: str = "run", dry_run: bool = False,
                 overwrite: bool = False) -> None:
        self.cfg = cfg
        self.dry_run = dry_run
        self.overwrite = overwrite
        init_logging(verbose=True)
        self.log = get_logger()
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.device = resolve_device(cfg.device, local_rank)
        is_main = int(os.environ.get("RANK", 0)) == 0
        self.output = choose_output(cfg.output, script, resume=cfg.resume, overwrite=overwrite or not is_main)
        cfg.output = str(self.output)
        self.dist: DistInfo = init_distributed(self.device) if not dry_run else DistInfo()
        seed_everything(cfg.seed + self.dist.rank, cfg.deterministic)
        self.run: RunDir | None = None
        self.visdom = None

    def open_run(self) -> RunDir:
        """Create the run directory (rank 0 writes; ``--overwrite`` first removes the previous run's files)."""
        if self.run is not None:
            return self.run
        is_main = self.dist.is_main and not self.dry_run
        if is_main and self.overwrite and not self.cfg.resume and clear_run(self.output):
            self.log.info(f"--overwrite: replaced the previous run in {self.output}")
        self.run = RunDir(self.output, is_main=is_main)
        self.run.setup_logging(to_file=is_main)
        if self.cfg.visdom and is_main:
            from .visdom_logger import VisdomLogger, run_env_name

            self.visdom = VisdomLogger(self.cfg.visdom, env=run_env_name(self.output))
        return self.run

    def resume_path(self) -> Path | None:
        """The checkpoint ``--resume`` names (None without ``--resume``)."""
        if not self.cfg.resume:
            return None
        path = self.output / "checkpoints" / "last.pt" if self.cfg.resume == "auto" else Path(self.cfg.resume)
        if not path.is_file():
            raise KDVisionError(f"--resume: no checkpoint to resume from at {path}")
        return path

    def prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        """Move to the device, channels_last when asked."""
        module = module.to(self.device)
        if self.cfg.channels_last:
            module = module.to(memory_format=torch.channels_last)
        return module

    def resolved_config(self, cfg_dict: dict[str, Any]) -> dict[str, Any]:
        """What config.yaml holds: every config key (passed back with ``--config`` it reproduces the run) and, under
        ``_run``, the record of this run (not applied by ``--config``)."""
        return {**cfg_dict, "_run": {"seed": self.cfg.seed, "output": str(self.output), "world_size": self.dist.world_size,
                                     "device": str(self.device), "git_commit": git_commit(),
                                     "versions": package_versions()}}

    def train(self, method: Method, *, task: str, metric: str, batch_size: int,
              evaluator: Callable[[torch.nn.Module], dict[str, float]] | None, teacher_metric: float | None,
              norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None, extra_hooks: list[Hook] = (),
              render: Callable[[Method], torch.Tensor | None] | None = None, nrow: int = 8,
              epochs: int | None = None, iters_per_epoch: int | None = None,
              finish: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> dict[str, Any]:
        """Run ``method`` under the standard hooks and write ``summary.json``, with what ``finish(summary)`` adds (a
        recipe's exports and counts).

        Sample grids: ``render(method)`` (a [0, 1] batch) when given, else the method's samples denormalised with
        ``norm``; neither: no grids.
        """
        cfg = self.cfg
        resume = self.resume_path()
        self.open_run()
        hooks: list[Hook] = [LoggerHook(cfg.log_interval, cfg.progress), CheckpointHook(), *extra_hooks]
        if evaluator is not None:
            hooks.append(EvalHook(evaluator, metric, cfg.eval_every))
        if render is None and norm is not None:
            render = sample_renderer(*norm)
        if render is not None:
            hooks.append(SampleGridHook(render, every=cfg.eval_every, nrow=nrow))
        trainer = Trainer(method, epochs=epochs or cfg.epochs, iters_per_epoch=iters_per_epoch or cfg.iters_per_epoch,
                          run=self.run, dist=self.dist, hooks=hooks, config=to_dict(cfg), visdom=self.visdom)
        if resume is not None:
            trainer.resume(resume)
        resolved = self.resolved_config(to_dict(cfg))
        self.run.write_config(resolved)
        if teacher_metric is not None:
            self.run.log_metrics({"step": trainer.state.step, "epoch": trainer.state.epoch, "split": "test",
                                  f"teacher_{metric}": teacher_metric})
        if self.visdom is not None:  # the config pane, and the teacher's metric next to the student's
            self.visdom.config(resolved, title=f"{self.output.name}: {method.name}")
            if teacher_metric is not None:
                self.visdom.reference("test", metric, teacher_metric)
        t0 = time.perf_counter()
        try:
            state = trainer.fit()
        finally:
            if self.visdom is not None:
                self.visdom.close()
        wall = time.perf_counter() - t0
        steps_this_run = max(state.step, 1)
        summary = {
            "method": method.name, "task": task, "metric": metric, "teacher_metric": teacher_metric,
            "student_best": state.best_metric, "student_last": state.last_metric, "iterations": state.step,
            "batch_size": batch_size,
            "train_iters_per_s": steps_this_run / state.train_time if state.train_time > 0 else None,
            "wall_time_s": wall, "device": str(self.device), "world_size": self.dist.world_size,
            "seed": cfg.seed, **method.summary(),
        }
        if self.dist.enabled:  # the replicas must have stayed identical: a drifting player is a silent DDP bug
            summary["rank_spread"] = spread = rank_spread(method.modules())
            drifted = {k: v for k, v in spread.items() if v > 1e-6}
            if drifted:
                self.log.warning(f"the {self.dist.world_size} ranks' weights differ after training: "
                                 + ", ".join(f"{k} by up to {v:.3g}" for k, v in drifted.items()))
        if finish is not None:
            summary = finish(summary)
        self.run.write_summary(summary)
        who = "student" if teacher_metric is not None else "model"
        self.log.info(f"done ({method.name}): {who} best {metric} {_fmt(state.best_metric)}, last "
                      f"{_fmt(state.last_metric)}" + (f"; teacher {_fmt(teacher_metric)}" if teacher_metric else "")
                      + f"; {summary['train_iters_per_s'] or 0:.2f} it/s; run directory {self.run.path}")
        return summary

    def close(self) -> None:
        cleanup()


def describe_plan(title: str, items: dict[str, Any]) -> str:
    """The ``--dry-run`` plan: a title and aligned ``key  value`` lines."""
    width = max(len(k) for k in items)
    return "\n".join([title] + [f"  {k:<{width}}  {v}" for k, v in items.items()])


def param_count(m: torch.nn.Module) -> str:
    n = sum(p.numel() for p in m.parameters())
    return f"{n / 1e6:.3f} M" if n >= 1e5 else f"{n:,}"


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"
