"""Engine services: config layering, RNG capture, trainer lifecycle, NaN stop, run directory, Visdom logger."""
import argparse
import json
import time
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn as nn

from kdvision.core.checkpoint import read_checkpoint
from kdvision.core.engine.config import RunConfig, parse_set, resolve_config
from kdvision.core.engine.method import Method
from kdvision.core.engine.rundir import SUMMARY_KEYS, RunDir
from kdvision.core.engine.seed import rng_state, set_rng_state
from kdvision.core.engine.trainer import (CheckpointHook, EvalHook, LoggerHook, Trainer, TrainingDiverged,
                                          denormalize)
from kdvision.core.engine.visdom_logger import VisdomLogger
from kdvision.core.errors import ConfigError

from kdv_testutils import FakeVisdom


@dataclass
class ToyConfig(RunConfig):
    lr: float = 0.1
    milestones: list[int] = field(default_factory=list)
    name: str = "toy"
    flag: bool = False


def test_config_layering(tmp_path):
    yml = tmp_path / "c.yaml"
    yml.write_text("lr: 0.5\nname: from_yaml\nepochs: 7\n")
    args = argparse.Namespace(config=str(yml), name="from_cli", set=["milestones=[3, 5]", "flag=true", "lr=1e-3"])
    cfg = resolve_config(ToyConfig, {"epochs": 2, "lr": 0.2}, args)
    assert (cfg.epochs, cfg.name, cfg.milestones, cfg.flag) == (7, "from_cli", [3, 5], True)
    assert cfg.lr == pytest.approx(1e-3) and isinstance(cfg.lr, float)
    with pytest.raises(ConfigError, match="unknown config key 'lrr'"):
        resolve_config(ToyConfig, {}, argparse.Namespace(set=["lrr=1"]))
    with pytest.raises(ConfigError, match="invalid value"):
        resolve_config(ToyConfig, {}, argparse.Namespace(set=["epochs=many"]))
    with pytest.raises(ConfigError, match="--set expects key=value"):
        parse_set(["epochs"])
    with pytest.raises(ConfigError, match="config file not found"):
        resolve_config(ToyConfig, {}, argparse.Namespace(config=str(tmp_path / "missing.yaml")))


def test_rng_state_round_trip_through_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(5)
    random.seed(5)
    np.random.seed(5)
    torch.save({"rng": rng_state()}, tmp_path / "r.pt")
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    set_rng_state(read_checkpoint(tmp_path / "r.pt")["rng"])
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expected[0], got[0]) and expected[1:] == got[1:]


class ToyMethod(Method):
    name = "toy"

    def __init__(self, nan_at=None):
        super().__init__(torch.device("cpu"))
        self.model = nn.Linear(3, 2)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.calls = 0
        self.nan_at = nan_at

    def modules(self):
        return {"student": self.model}

    def optimizers(self):
        return {"student": self.opt}

    def train_step(self):
        self.calls += 1
        loss = self.model(torch.randn(4, 3)).pow(2).mean()
        if self.nan_at is not None and self.calls >= self.nan_at:
            loss = loss * float("nan")
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach()}


def test_trainer_lifecycle_eval_checkpoint_and_metrics(tmp_path):
    run = RunDir(tmp_path)
    scores = iter([0.3, 0.7, 0.5])
    trainer = Trainer(ToyMethod(), epochs=3, iters_per_epoch=4, run=run,
                      hooks=[LoggerHook(interval=2, progress=False),
                             EvalHook(lambda m: {"acc": next(scores)}, "acc"), CheckpointHook()])
    state = trainer.fit()
    assert (state.epoch, state.step, state.best_metric, state.last_metric) == (3, 12, 0.7, 0.5)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    test = [r for r in records if r["split"] == "test"]
    assert [r["step"] for r in train] == [2, 4, 6, 8, 10, 12] and all("loss" in r for r in train)
    assert [r["acc"] for r in test] == [0.3, 0.7, 0.5] and test[-1]["best_acc"] == 0.7
    best, last = read_checkpoint(run.best_ckpt), read_checkpoint(run.last_ckpt)
    assert best["epoch"] == 2 and last["epoch"] == 3 and last["best_metric"] == 0.7
    assert set(last["state_dict"]) == {"weight", "bias"}  # the tracked model, loadable with load_weights


def test_nan_loss_stops_run_and_keeps_last_good_checkpoint(tmp_path):
    run = RunDir(tmp_path)
    trainer = Trainer(ToyMethod(nan_at=7), epochs=3, iters_per_epoch=4, run=run,
                      hooks=[LoggerHook(interval=2, progress=False), CheckpointHook()])
    with pytest.raises(TrainingDiverged, match=r"loss loss became nan at step 8 \(epoch 2\)"):
        trainer.fit()
    assert read_checkpoint(run.last_ckpt)["epoch"] == 1  # written after epoch 1, never after the NaN


def test_summary_requires_contract_keys(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(ValueError, match="summary lacks"):
        run.write_summary({"method": "x"})
    run.write_summary({k: 1 for k in SUMMARY_KEYS})
    assert set(json.loads((tmp_path / "summary.json").read_text())) == set(SUMMARY_KEYS)


def test_denormalize_back_to_unit_range():
    x = torch.zeros(2, 3, 4, 4)
    out = denormalize(x, (0.5, 0.25, 0.0), (0.5, 0.5, 0.5))
    assert out[:, 0].unique().item() == 0.5 and out[:, 1].unique().item() == 0.25
    assert denormalize(torch.full((1, 1, 2, 2), 10.0), (0.1307,), (0.3081,)).max().item() == 1.0


def test_visdom_logger_posts_in_background_and_never_blocks():
    with FakeVisdom() as server:
        vis = VisdomLogger(server.url, env="test")
        vis.scalars(10, {"loss_S": 0.25}, "train")
        vis.close()
        events = [body for path, body in server.events if path.endswith("/events")]
        assert events and events[0]["eid"] == "test" and events[0]["win"] == "train/loss_S"
        assert events[0]["data"][0]["y"] == [0.25] and events[0]["data"][0]["x"] == [10]


def test_visdom_logger_unreachable_server_is_quiet_and_fast():
    vis = VisdomLogger("http://127.0.0.1:9", env="x")  # nothing listens on port 9
    t0 = time.perf_counter()
    for i in range(1000):
        vis.scalars(i, {"loss": 1.0})
    assert time.perf_counter() - t0 < 0.5  # the training loop never waits on the network
    vis._thread.join(10)
    assert vis._dead.is_set()


def test_import_has_no_side_effects(tmp_path):
    """Importing the library neither imports visdom (nor contacts a server) nor creates files."""
    import subprocess
    import sys

    code = ("import sys, kdvision.classification.dfad, kdvision.classification.teacher, kdvision.core.engine.runner;"
            "print('visdom' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False"]
    assert list(tmp_path.iterdir()) == []


def test_every_entry_scripts_help_states_each_config_flags_default_once():
    """--help of every Entry script shows, for each option generated from a config field, its default exactly once
    (the common run flags --config/--set/--resume/... state theirs in words)."""
    from kdv_testutils import import_entry_modules

    import_entry_modules()  # the entry modules register their Entry objects
    import argparse
    from dataclasses import fields

    from kdvision.core.recipes.base import ENTRIES

    assert len(ENTRIES) >= 5
    for script, entry in ENTRIES.items():
        names = {f.name for f in fields(entry.recipe.config_class)}
        groups = [g for g in entry.parser()._action_groups if not (g.title or "").startswith("run (common")]
        bound = [a for g in groups for a in g._group_actions if a.dest in names
                 and f"--{a.dest}" in a.option_strings  # generated from the field (not --fp16-style compat flags)
                 and a.help != argparse.SUPPRESS]  # nor the hidden --no-<flag> negatives
        assert len(bound) > 10, script
        for action in bound:
            assert action.help and action.help.count("default:") == 1, (script, action.option_strings, action.help)
