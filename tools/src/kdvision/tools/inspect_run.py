"""Look at run directories without a browser: ``python tools/inspect_run.py RUN [RUN ...] [--plot PNG] [--seeds]``.

- One run: its summary (method, task, device, iterations, throughput, wall time), the best and last value of
  every evaluation metric and the last value of every training value, and a PNG of its curves
  (default ``RUN/curves.png``).
- Several runs (or folders of runs, e.g. a ``--seeds`` group's output): one table, a row per run, and one figure
  with a line per run (default ``./compare.png``); the figure's legend names each run and its method.
- ``--seeds``: runs that differ only in their seed (same method and configuration otherwise) are grouped, and the
  table gives mean ± standard deviation (sample, n − 1, as ``--seeds`` runs report it) of the best and the last
  metric per group.
- ``--no-plot``: only the text.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

from kdvision.core.errors import KDVisionError

from .runs import Run, expand, mean_std, read_run


def _f(v: Any, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def describe(run: Run) -> str:
    """The text report of one run."""
    s = run.summary or {}
    lines = [f"run        {run.path}", f"method     {run.method}" + (f"  (task {s['task']})" if s.get("task") else "")]
    if not run.summary:
        lines.append("status     unfinished (no summary.json): numbers from metrics.jsonl")
    for key, label in (("device", "device"), ("world_size", "world size"), ("seed", "seed"),
                       ("batch_size", "batch size")):
        if key in s:
            lines.append(f"{label:<10} {s[key]}")
    it_s = run.iters_per_s()
    lines.append(f"iterations {_f(run.iterations())}" + (f"  ({it_s:.2f} it/s training" if it_s else "")
                 + (f", {s['wall_time_s']:.1f} s wall)" if it_s and s.get("wall_time_s") else ")" if it_s else ""))
    metric = run.metric
    if metric:
        lines.append(f"{metric:<10} teacher {_f(run.teacher_metric())}  student best {_f(run.best())}  "
                     f"last {_f(run.last())}")
    for split in run.splits():
        for key, (xs, ys) in run.series(split).items():
            if split == "test" and (key == metric or key.startswith(("best_", "teacher_"))):
                continue
            best = max(ys) if split == "test" else min(ys)
            lines.append(f"  {split}/{key:<18} last {ys[-1]:.4g} (step {int(xs[-1])})  "
                         f"{'best' if split == 'test' else 'min'} {best:.4g}")
    return "\n".join(lines)


TABLE_HEADER = ("run", "method", "metric", "teacher", "best", "last", "iters", "it/s")


def table_rows(runs: list[Run]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    rows = [(r.name, r.method, r.metric or "n/a", _f(r.teacher_metric()), _f(r.best()), _f(r.last()),
             _f(r.iterations()), _f(r.iters_per_s(), 2)) for r in runs]
    return TABLE_HEADER, rows


def seed_groups(runs: list[Run]) -> list[list[Run]]:
    """Runs grouped by method and configuration apart from the seed (in first-seen order)."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.method, r.comparable_config()), []).append(r)
    return list(groups.values())


SEED_HEADER = ("group", "method", "metric", "seeds", "n", "best (mean ± std)", "last (mean ± std)")


def seed_rows(runs: list[Run]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    rows = []
    for group in seed_groups(runs):
        first = group[0]
        parents = {r.path.resolve().parent.name for r in group}
        name = parents.pop() if len(parents) == 1 and len(group) > 1 else first.name
        seeds = ",".join(str((r.summary or {}).get("seed", r.config.get("seed", "?"))) for r in group)

        def ms(values: list[float | None]) -> str:
            stats = mean_std([v for v in values if v is not None])
            return "n/a" if stats is None else f"{stats[0]:.4f} ± {stats[1]:.4f}"

        rows.append((name, first.method, first.metric or "n/a", seeds, str(len(group)),
                     ms([r.best() for r in group]), ms([r.last() for r in group])))
    return SEED_HEADER, rows


def format_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(out)


def plot_runs(runs: list[Run]) -> Any:
    """A matplotlib figure: the evaluation metric per run (with each teacher's as a dashed line) on the left, the
    training losses per run on the right. Every line's label names its run and method."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.8), layout="constrained")
    ax_m, ax_l = fig.subplots(1, 2)
    metrics = sorted({r.metric for r in runs if r.metric})
    for i, run in enumerate(runs):
        color = f"C{i % 10}"
        metric = run.metric
        series = run.series("test")
        if metric and metric in series:
            xs, ys = series[metric]
            ax_m.plot(xs, ys, marker="o", ms=3, color=color, label=f"{run.label} student")
            teacher = run.teacher_metric()
            if teacher is not None:
                ax_m.axhline(teacher, color=color, ls="--", lw=1, label=f"{run.label} teacher")
        styles = iter(["-", "--", ":", "-."] * 4)
        for key, (xs, ys) in run.series("train").items():
            if key.startswith("loss"):
                ax_l.plot(xs, ys, color=color, ls=next(styles), label=f"{run.label} {key}")
    ax_m.set_title(f"test {'/'.join(metrics) or 'metric'}" + (" (no evaluation logged)" if not metrics else ""))
    ax_m.set_xlabel("step")
    ax_m.set_ylabel("/".join(metrics) or "metric")
    ax_l.set_title("training losses")
    ax_l.set_xlabel("step")
    ax_l.set_ylabel("loss")
    for ax in (ax_m, ax_l):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    names = ", ".join(r.label for r in runs)
    fig.suptitle(names if len(names) < 120 else f"{len(runs)} runs", fontsize=10)
    return fig


def inspect(paths: list[str | Path], *, plot: str | Path | None = None, no_plot: bool = False, seeds: bool = False,
            log: Callable[[str], None] = print) -> Path | None:
    """Print the report of ``paths`` and write the figure (returns its path, or None with ``no_plot``)."""
    runs = [read_run(p) for p in expand(list(paths))]
    if not runs:
        raise KDVisionError("no run directories given")
    if len(runs) == 1 and not seeds:
        log(describe(runs[0]))
    else:
        log(format_table(*table_rows(runs)))
    if seeds:
        log("")
        log(format_table(*seed_rows(runs)))
    if no_plot:
        return None
    out = Path(plot) if plot else (runs[0].path / "curves.png" if len(runs) == 1 else Path("compare.png"))
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_runs(runs).savefig(out, dpi=110)
    log(f"plot: {out}")
    return out


def build_parser() -> argparse.ArgumentParser:
    from kdvision.core.engine.cli import ArgumentParser

    p = ArgumentParser(prog="inspect_run.py", description=__doc__, argument_default=None)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories, or folders of run directories")
    p.add_argument("--plot", metavar="PNG", help="where to write the figure (default: RUN/curves.png for one run, "
                                                 "./compare.png for several)")
    p.add_argument("--no-plot", "--no_plot", dest="no_plot", action="store_true", help="only print")
    p.add_argument("--seeds", action="store_true",
                   help="group runs that differ only in their seed: mean ± std of best and last")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return p


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    inspect(args.runs, plot=args.plot, no_plot=args.no_plot, seeds=args.seeds, log=lambda m: print(m, flush=True))
    return 0


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``tools/inspect_run.py`` (exits)."""
    from kdvision.core.engine.cli import run_cli

    run_cli(_main, argv)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
