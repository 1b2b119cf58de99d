"""The :class:`Recipe` base: config → players → method → trainer, with one driver for every recipe.

detectron2's ``DefaultTrainer`` with its ``build_*`` methods is the model. :meth:`Recipe.run` is the one driver:

1. the config's ``validate()`` and the prologue checks (:meth:`check`),
2. the run context (device, processes, seed; the output directory is chosen and checked, not yet created),
3. players (:meth:`build_players`) and the evaluator (:meth:`build_evaluator`),
4. DDP / ``torch.compile`` of the trained players (:meth:`parallel_players`; one policy for every recipe),
5. the method (:meth:`build_method`),
6. ``--dry-run``: print the plan (:meth:`plan`) and return,
7. the teacher's metric (:meth:`measure_teacher`),
8. evaluation only (:meth:`evaluate_only`) when the config asks for it,
9. training under the standard hooks plus :meth:`hooks`, then :meth:`finish`.

The run directory is created in step 9, once every input is known to be good: a bad checkpoint or data root
leaves nothing behind. A new recipe overrides what differs; recipes and their method variants are registered by
name (:data:`RECIPES`, :func:`list_methods`) and the tests are parametrized over that registry.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from ..engine.method import Method, unwrap
from ..engine.runner import RunContext, describe_plan
from ..engine.trainer import Hook
from ..errors import ConfigError
from ..registry import Registry
from .task import Evaluator, TaskAdapter, test_split_evaluator

RECIPES = Registry("recipe")
METHODS = Registry("method")


def register_method(name: str, recipe: str, **overrides: Any) -> None:
    """Register method variant ``recipe/name``: the recipe that runs it and the config values that select it.

    Variants are keyed by recipe: the same name may mean different things in two recipes (``dfad/dfad``, the DFAD
    game of ``dfad_*.py``, and ``datafree/dfad``, DFAD's generator loss as ``kd_datafree.py --method dfad``).
    """
    METHODS.add(f"{recipe}/{name}", lambda: (recipe, overrides), recipe=recipe, overrides=overrides)


def list_methods() -> list[str]:
    """Every registered method variant as ``recipe/name``."""
    return METHODS.names()


def method_recipe(key: str) -> tuple[str, dict[str, Any]]:
    """(recipe name, config values) of a registered method variant ``recipe/name``."""
    meta = METHODS.meta(key)
    return meta["recipe"], dict(meta["overrides"])


class Recipe:
    """Subclasses set :attr:`name`, :attr:`config_class` and override the ``build_*`` steps that differ."""

    name = "recipe"
    config_class: type = object
    plan_title = "plan"
    eval_only_field: str | None = None  # the config flag that asks for evaluation only (``test_only``, ...)

    def __init__(self, cfg: Any, task: TaskAdapter, *, script: str, given: set[str] = frozenset(),
                 explicit_root: bool = True, dry_run: bool = False, overwrite: bool = False) -> None:
        self.cfg, self.task, self.script = cfg, task, script
        self.given, self.explicit_root = set(given), explicit_root
        self.dry_run, self.overwrite = dry_run, overwrite
        self.ctx: RunContext | None = None
        self.players: dict[str, nn.Module] = {}
        self.evaluator: Evaluator | None = None
        self.method: Method | None = None
        self.teacher_metric: float | None = None

    # -- steps to override -----------------------------------------------------------------------------------------
    def check(self) -> None:
        """Prologue checks beyond the config's own ``validate()`` (files, registry names)."""

    def build_players(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def build_evaluator(self) -> Evaluator | None:
        return None

    def teacher_domain_evaluator(self, warn_if_missing: str) -> Evaluator | None:
        """The evaluator of a recipe that trains on no labelled data of its own (data-free, out-of-domain): the
        test split of ``cfg.eval_dataset`` (default ``cfg.dataset``), normalised as the teacher expects
        (``self.norm``, set by :meth:`check`); None, with ``warn_if_missing`` in one warning line, when it is not
        found. Sets ``self.eval_name`` for the plan."""
        cfg = self.cfg
        self.eval_name = cfg.eval_dataset or cfg.dataset
        return test_split_evaluator(self.ctx, self.task, cfg, dataset=self.eval_name, normalize=self.norm,
                                    batch_size=cfg.test_batch_size, workers=cfg.workers,
                                    explicit_root=self.explicit_root, warn_if_missing=warn_if_missing)

    def parallel_players(self) -> tuple[str, ...]:
        """Players trained by this run: wrapped in DDP under torchrun, compiled with ``--compile``."""
        return ("student",)

    def build_method(self) -> Method:
        raise NotImplementedError

    def plan(self) -> dict[str, str]:
        return {}

    def evaluated(self, player: nn.Module) -> nn.Module:
        """The module the evaluator runs for a player (the player itself; a wrapper's inner model)."""
        return player

    def measure_teacher(self) -> float | None:
        teacher = self.players.get("teacher")
        if teacher is None or self.evaluator is None:
            return None
        value = self.evaluator(self.evaluated(teacher))[self.task.metric]
        self.ctx.log.info(f"teacher {getattr(self.cfg, 'teacher', '')} test {self.task.metric} {value:.4f}")
        return value

    def evaluate_only(self) -> dict[str, Any]:
        """Evaluate the teacher (measured already) and, with ``--resume``, the resumed student; no run directory."""
        from ..checkpoint import load_weights

        out: dict[str, Any] = {"teacher_metric": self.teacher_metric}
        path = self.ctx.resume_path()
        if path is not None and self.evaluator is not None:
            model = self.method.eval_model()
            load_weights(unwrap(model), path)
            result = self.evaluator(model)
            self.ctx.log.info(f"{'student' if 'teacher' in self.players else 'model'} test {self.task.metric} "
                              f"{result[self.task.metric]:.4f}")
            out.update(result)
        return out

    def hooks(self) -> list[Hook]:
        return []

    def render(self) -> Callable[[Method], torch.Tensor | None] | None:
        return None

    def train_settings(self) -> dict[str, Any]:
        """Keywords for :meth:`RunContext.train` beyond the standard ones (``epochs``, ``iters_per_epoch``, ...)."""
        return {}

    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        return summary

    # -- the driver ---------------------------------------------------------------------------------------------
    def _parallel(self) -> None:
        ctx = self.ctx
        for key in self.parallel_players():
            module = self.players.get(key)
            if module is None:
                continue
            if ctx.dist.enabled:
                from torch.nn.parallel import DistributedDataParallel as DDP

                module = DDP(module)
            if self.cfg.compile:
                module = torch.compile(module)
            self.players[key] = module

    def run(self) -> dict[str, Any]:
        self.cfg.validate()
        self.check()
        self.ctx = RunContext(self.cfg, script=self.script, dry_run=self.dry_run, overwrite=self.overwrite)
        try:
            self.players = self.build_players()
            self.evaluator = self.build_evaluator()
            if not self.dry_run:
                self._parallel()
            self.method = self.build_method()
            if self.dry_run:
                print(describe_plan(self.plan_title, {**self.plan(), "device": f"{self.ctx.device} (world size "
                                    f"{self.ctx.dist.world_size})", "output": str(self.ctx.output)}))
                return {}
            self.teacher_metric = self.measure_teacher()
            if self.eval_only_field and getattr(self.cfg, self.eval_only_field):
                return self.evaluate_only()
            return self.ctx.train(self.method, task=self.task.name, metric=self.task.metric,
                                  batch_size=self.cfg.batch_size, evaluator=self.evaluator,
                                  teacher_metric=self.teacher_metric, extra_hooks=self.hooks(),
                                  render=self.render(), finish=self.finish, **self.train_settings())
        finally:
            self.ctx.close()


#: Every entry point built with :class:`Entry` (script name -> entry), for the tests over every script's flags.
ENTRIES: dict[str, "Entry"] = {}


@dataclass
class Entry:
    """An entry script: its recipe, task and preset, its generated parser, and ``main()``.

    ``preset``: the script's preset values, or a function of the parsed arguments returning them (the data-free
    script picks its preset by ``--method``, wherever that was given). ``adjust(cfg, given, args)`` applies
    script-specific rules (default checkpoint names, model-name mapping) before the recipe validates the config.
    """

    recipe: type[Recipe]
    task: Any  # a TaskAdapter, or a function of the config returning one
    script: str
    description: str
    preset: dict[str, Any] | Callable[[Any], dict[str, Any]]
    aliases: dict[str, list[str]] = field(default_factory=dict)
    compat: dict[str, bool] | None = None
    help_preset: dict[str, Any] | None = None
    extend_parser: Callable[[Any], None] | None = None
    adjust: Callable[[Any, set[str], Any], None] | None = None

    def __post_init__(self) -> None:
        ENTRIES[self.script] = self

    def parser(self):
        from ..engine.cli import add_compat_device_flags, config_parser

        shown = self.help_preset if self.help_preset is not None else (
            self.preset if isinstance(self.preset, dict) else {})
        parser = config_parser(self.description, self.recipe.config_class, preset=shown, aliases=self.aliases)
        parser.prog = f"{self.script}.py"
        if self.compat is not None:
            add_compat_device_flags(parser, **self.compat)
        if self.extend_parser is not None:
            self.extend_parser(parser)
        return parser

    def resolve(self, argv: list[str]):
        """(config, keys the user gave, parsed arguments) for a command line; the config is not yet validated."""
        from ..engine.cli import apply_compat_device
        from ..engine.config import resolve
        from ..engine.rundir import warn

        args = self.parser().parse_intermixed_args(argv)  # yacs-style KEY VALUE positionals may sit anywhere
        apply_compat_device(args, warn)
        values = self.preset(args) if callable(self.preset) else self.preset
        cfg, given = resolve(self.recipe.config_class, values, args)
        if self.adjust is not None:
            self.adjust(cfg, given, args)
        return cfg, given, args

    def task_for(self, cfg) -> TaskAdapter:
        return self.task if isinstance(self.task, TaskAdapter) else self.task(cfg)

    def build(self, argv: list[str]) -> Recipe:
        cfg, given, args = self.resolve(argv)
        return self.recipe(cfg, self.task_for(cfg), script=self.script, given=given,
                           explicit_root="data_root" in given, dry_run=getattr(args, "dry_run", False),
                           overwrite=getattr(args, "overwrite", False))

    def main(self, argv: list[str] | None = None) -> None:
        from ..engine.cli import run_cli
        from ..engine.rundir import init_logging

        def _main(args_list: list[str]) -> int:
            init_logging(keep=False)
            self.build(args_list).run()
            return 0

        run_cli(_main, argv)


def pop_seeds(argv: list[str]) -> list[int] | None:
    """``--seeds 0,1,2`` (or ``--seeds=0,1,2``) taken out of the command line."""
    for i, arg in enumerate(argv):
        if arg == "--seeds" or arg.startswith("--seeds="):
            value = arg.split("=", 1)[1] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else "")
            del argv[i:i + (1 if "=" in arg else 2)]
            try:
                seeds = [int(s) for s in value.strip("[]").split(",") if s.strip()]
            except ValueError:
                seeds = []
            if not seeds:
                raise ConfigError(f"--seeds {value!r}: expected a list of integers such as 0,1,2")
            return seeds
    return None


def run_seeds(entry: "Entry", argv: list[str], seeds: list[int]) -> dict[str, Any]:
    """Run ``entry`` once per seed and report mean ± std of the best and the last metric (the reproduction question:
    one seed says little when runs spread by a point).

    Seed k writes ``<output>/seed<k>`` (``<output>`` = ``--output``, else a fresh ``runs/<script>/seeds-<time>``);
    ``<output>/seeds.json`` holds every run's numbers and the statistics (std: the sample standard deviation, n − 1).
    A seed whose run directory is complete is not run again (``--resume`` continues an interrupted one).
    """
    import json
    import statistics
    import time
    from pathlib import Path

    cfg, _, _ = entry.resolve(argv)
    root = Path(cfg.output) if cfg.output else Path("runs") / entry.script / time.strftime("seeds-%Y%m%d-%H%M%S")
    runs = []
    for seed in seeds:
        out = root / f"seed{seed}"
        done = out / "summary.json"
        summary = (json.loads(done.read_text()) if done.is_file() else
                   entry.build([*argv, "--seed", str(seed), "--output", str(out)]).run())
        runs.append({"seed": seed, "best": summary["student_best"], "last": summary["student_last"],
                     "output": str(out)})

    def stats(key: str) -> dict[str, float | None]:
        values = [r[key] for r in runs if r[key] is not None]
        if not values:
            return {"mean": None, "std": None}
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}

    report = {"script": entry.script, "seeds": seeds, "runs": runs, "best": stats("best"), "last": stats("last")}
    root.mkdir(parents=True, exist_ok=True)
    (root / "seeds.json").write_text(json.dumps(report, indent=2))
    fmt = lambda s: "n/a" if s["mean"] is None else f"{s['mean']:.4f} ± {s['std']:.4f}"  # noqa: E731
    print(f"{len(seeds)} seeds {','.join(map(str, seeds))}: best {fmt(report['best'])}, last {fmt(report['last'])} "
          f"({root / 'seeds.json'})")
    return report
