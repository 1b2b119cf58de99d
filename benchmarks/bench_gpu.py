#!/usr/bin/env python
"""The GPU benchmark suite (``make bench-gpu``): every GPU measurement of ``benchmarks/`` in one process, in order,
within a time budget, so that a session lent a GPU for a few minutes runs them all with one command.

Parts (each one call of an existing benchmark's ``main(argv)``, at the published settings):

- ``dfad-mnist``, ``dfad-cifar``: ``bench_dfad.py`` at the presets' batch (512, 256), variants
  default, contiguous, amp, compile;
- ``datafree-cmi``, ``datafree-rgal``: ``bench_datafree.py`` KD step and synthesis step at its published shapes
  (synthesis batch 256, KD batch 128 / 128 pairs, bank 40960 x 5408, n_neg 4096, pool 2048 PNGs);
- ``mosaickd``: ``bench_mosaickd.py`` (wrn40_2 → wrn16_1, batch 256 + 256 OOD per student step, the
  reference's two DataLoader stacks with 4 workers each), variants default, contiguous, amp;
- ``seg-camvid``: ``bench_dfad.py --preset camvid`` at batch 64, 128 x 128 px (the preset's size): it/s and peak
  memory, variants default, amp;
- ``dfad-caltech101``: ``bench_dfad.py`` at batch 64, 128 px, the four variants; last, as it is the one to drop
  when time is short.

Budget (``--budget-s``, default 8 min, counted from the start of this script): each part's cost is estimated as
set-up + per-iteration cost x iterations x rounds (rough H200 figures below, corrected after every part by the
measured / estimated ratio of the parts run so far); iterations per round are scaled down so that the remaining
parts fit. A part whose estimate no longer fits is skipped (recorded with the reason); a running part is stopped
when the budget runs out or when it runs far past its estimate (recorded as ``timed_out``), and a failing part is
recorded with its one-line error (traceback in the JSON); the others still run. Results go to
``--out-dir`` as ``bench_gpu.json`` (every part's result dict, device, torch, timestamps, per-part wall time) and
``bench_gpu.md`` (the table printed at the end). Exit status 1 if a part failed.

    python benchmarks/bench_gpu.py                           # CUDA, the whole suite in <= 8 min
    python benchmarks/bench_gpu.py --device cpu --smoke      # every part at tiny sizes (~1 min on 2 cores)
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import importlib
import json
import platform
import signal
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

DFAD_VARIANTS = "default,contiguous,amp,compile"
DATAFREE_SMOKE = dict(quick=True, syn_batch=8, kd_batch=8, bank=64, n_neg=16, pool=32, kd_steps=10, workers=0)


@dataclasses.dataclass
class Part:
    name: str
    module: str  # the benchmark whose main(argv) runs the part
    options: dict  # its command-line options (True: a flag), less device, iters and rounds
    iters: int  # per round, at a full budget
    rounds: int
    setup_s: float  # estimated on an H200: build, warm-up, compilation, per-round overheads
    unit_s: float  # estimated on an H200: one iteration of every loop of the part
    smoke: dict  # options replaced in --smoke (tiny sizes), which runs 1 iteration x 1 round
    smoke_s: float  # estimated wall time in --smoke on 2 CPU cores

    def estimate(self, iters: int, smoke: bool) -> float:
        return self.smoke_s if smoke else self.setup_s + self.unit_s * iters * self.rounds


PARTS = [
    Part("dfad-mnist", "bench_dfad", dict(preset="mnist", batch=512, variants=DFAD_VARIANTS),
         20, 5, 60, 0.06, dict(batch=8, variants="default,amp"), 5),  # compile only on the GPU (~30 s cold on a CPU)
    Part("dfad-cifar", "bench_dfad", dict(preset="cifar", batch=256, variants=DFAD_VARIANTS),
         20, 5, 70, 0.25, dict(batch=2, variants="default,amp"), 10),
    Part("datafree-cmi", "bench_datafree", dict(methods="cmi"), 20, 5, 40, 0.3, DATAFREE_SMOKE, 6),
    Part("datafree-rgal", "bench_datafree", dict(methods="rgal"), 20, 5, 35, 0.25, DATAFREE_SMOKE, 6),
    Part("mosaickd", "bench_mosaickd", dict(batch=256, workers=4, variants="default,contiguous,amp"),
         10, 3, 40, 0.5, dict(quick=True, ood=256, workers=0), 20),
    Part("seg-camvid", "bench_dfad", dict(preset="camvid", batch=64, variants="default,amp"),
         10, 3, 15, 0.4, dict(batch=2, img_size=64), 15),
    Part("dfad-caltech101", "bench_dfad", dict(preset="caltech101", batch=64, variants=DFAD_VARIANTS),
         10, 3, 70, 0.15, dict(batch=2, img_size=64, variants="default,amp"), 9),
]


def to_argv(options: dict) -> list[str]:
    return [a for k, v in options.items() for a in ([f"--{k}"] if v is True else [f"--{k}", str(v)])]


class BudgetExceeded(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float, why: str):
    """Raise :class:`BudgetExceeded` in the main thread once ``seconds`` have passed."""
    def on_alarm(signum, frame):
        raise BudgetExceeded(f"stopped after {seconds:.0f} s: {why}")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def scaled_iters(parts: list[Part], left: float, k: float) -> int:
    """Iterations per round for ``parts[0]``: every remaining part's iterations scaled by one factor so that their
    estimates (x ``k``, the measured / estimated ratio so far) fit in ``left`` seconds."""
    fixed = k * sum(p.setup_s for p in parts)
    variable = k * sum(p.unit_s * p.iters * p.rounds for p in parts)
    scale = min(1.0, max(0.0, (left - fixed) / variable))
    return max(1, int(parts[0].iters * scale))


def rows(name: str, result: dict) -> list[tuple]:
    """(part, loop, it/s, ratio to the reference, peak GiB or None) for a bench_dfad or bench_datafree result."""
    if "it_per_s" in result:  # bench_dfad
        peaks = result.get("peak_step_mem_gib", {})
        return [(name, loop, rate, result["ratio_vs_reference"].get(loop, 1.0), peaks.get(loop))
                for loop, rate in result["it_per_s"].items()]
    return [(f"{name} {kind}", loop, r["steps_per_s"], r["ratio_vs_reference"], r.get("peak_step_mem_gib"))
            for res in result["results"].values() for kind in ("kd", "synth") if kind in res
            for loop, r in res[kind].items()]


def markdown(report: dict) -> str:
    head = (f"## GPU suite: {report['device_name']} ({report['device']}), torch {report['torch']}, "
            f"{report['started'][:10]}{' (smoke)' if report['smoke'] else ''}\n\n"
            f"Budget {report['budget_s']:.0f} s, wall {report['wall_s']:.0f} s.\n")
    loops = ["| part | loop | it/s | x ref | peak GiB |", "|---|---|---|---|---|"]
    parts = ["| part | status | wall s | arguments |", "|---|---|---|---|"]
    for name, part in report["parts"].items():
        for label, loop, rate, ratio, peak in rows(name, part["result"]) if part["status"] == "ok" else []:
            loops.append(f"| {label} | {loop} | {rate:.3f} | {ratio:.2f} | "
                         f"{'-' if peak is None else f'{peak:.2f}'} |")
        status = part["status"] + (f": {part['reason']}" if "reason" in part else "")
        wall = f"{part['wall_s']:.1f}" if "wall_s" in part else "-"
        parts.append(f"| {name} | {status} | {wall} | `{' '.join(part['argv'])}` |")
    return "\n".join([head, *loops, "", *parts]) + "\n"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def main(argv=None) -> int:
    t0 = time.monotonic()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--budget-s", type=float, default=480.0, help="total time budget in seconds (default 8 min)")
    p.add_argument("--smoke", action="store_true", help="every part at tiny sizes, 1 iteration x 1 round (tests)")
    p.add_argument("--parts", default=",".join(part.name for part in PARTS), help="comma-separated subset, in order")
    p.add_argument("--out-dir", default="runs/bench-gpu", help="where bench_gpu.json and bench_gpu.md go")
    args = p.parse_args(argv)
    names = args.parts.split(",")
    unknown = sorted(set(names) - {part.name for part in PARTS})
    if unknown:
        p.error(f"unknown part(s) {', '.join(unknown)}; valid: {', '.join(part.name for part in PARTS)}")
    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        p.error(f"--device {args.device}: {e}")
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"error: --device {args.device}: CUDA is not available here (torch {torch.__version__}, "
                 f"CUDA build {torch.version.cuda}); use --device cpu --smoke to try the suite without a GPU")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the entry scripts run; every part and loop alike
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    selected = [part for part in PARTS if part.name in names]
    report = {"suite": "bench_gpu", "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
              platform.processor() or platform.machine(), "torch": torch.__version__, "cuda": torch.version.cuda,
              "cudnn_benchmark": torch.backends.cudnn.benchmark, "smoke": args.smoke, "budget_s": args.budget_s,
              "started": now(), "parts": {}}
    deadline = t0 + args.budget_s - min(10.0, 0.05 * args.budget_s)  # the rest: writing the report
    estimated = measured = 0.0  # over the parts run so far (timed-out ones as a lower bound): the correction
    for i, part in enumerate(selected):
        k = measured / estimated if estimated else 1.0
        left = deadline - time.monotonic()
        iters = 1 if args.smoke else scaled_iters(selected[i:], left, k)
        rounds = 1 if args.smoke else part.rounds
        part_argv = to_argv({**part.options, **(part.smoke if args.smoke else {}), "device": args.device,
                             "iters": iters, "rounds": rounds})
        guess = part.estimate(iters, args.smoke)
        entry = report["parts"][part.name] = {"argv": part_argv, "estimate_s": round(k * guess, 1)}
        if k * guess > left:
            entry.update(status="skipped", reason=f"budget: {max(left, 0):.0f} s left, needs ~{k * guess:.0f} s")
            print(f"\n== {part.name}: skipped ({entry['reason']})", flush=True)
            continue
        print(f"\n== {part.name}: {part.module}.py {' '.join(part_argv)}", flush=True)
        entry["started"] = now()
        start = time.monotonic()
        cap = 2 * k * guess + 60  # a part far past its estimate (a compile storm, a hang) must not starve the rest
        try:
            with time_limit(min(left, cap), "the budget ran out" if left < cap else "far past the part's estimate"):
                entry["result"] = importlib.import_module(part.module).main(part_argv)
            entry["status"] = "ok"
            estimated, measured = estimated + guess, measured + time.monotonic() - start
        except BudgetExceeded as e:
            entry.update(status="timed_out", reason=str(e))
            estimated, measured = estimated + guess, measured + time.monotonic() - start  # a lower bound
        except (Exception, SystemExit) as e:  # argparse errors are SystemExit (their message is in the log)
            reason = f"arguments rejected (exit {e.code})" if isinstance(e, SystemExit) else f"{type(e).__name__}: {e}"
            entry.update(status="failed", reason=(reason.splitlines() or ["?"])[0][:300],
                         traceback=traceback.format_exc())
            print(f"== {part.name} failed: {entry['reason']}", file=sys.stderr, flush=True)
        entry["wall_s"] = round(time.monotonic() - start, 2)
        gc.collect()
        torch._dynamo.reset()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    report.update(finished=now(), wall_s=round(time.monotonic() - t0, 1),
                  estimate_correction=round(measured / estimated, 3) if estimated else None)
    table = markdown(report)
    (out_dir / "bench_gpu.json").write_text(json.dumps(report, indent=2))
    (out_dir / "bench_gpu.md").write_text(table)
    print("\n" + table + f"\nwritten: {out_dir / 'bench_gpu.json'}, {out_dir / 'bench_gpu.md'}")
    return int(any(part["status"] == "failed" for part in report["parts"].values()))


if __name__ == "__main__":
    sys.exit(main())
