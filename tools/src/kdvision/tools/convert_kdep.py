"""Export a KDEP / kdvision / torchvision backbone for downstream transfer (``reference/kdep.md`` §5.3–§5.5).

``python tools/convert_kdep.py INPUT OUTPUT --to detectron2|semseg [--arch R18|R50|mnv2]``

INPUT is anything :func:`kdvision.core.backbones.read_backbone` reads: a kdvision pre-training run's checkpoint,
a torchvision ``.pth``, a released KDEP student in robustness format (§5.1), a tonylins-layout MobileNetV2.

``--to detectron2``
    Detectron2's weight file: a pickle of ``{"model": {name: numpy array}, "__author__": "kdvision",
    "matching_heuristics": True}`` (``--tensors`` stores torch tensors, as KDEP's converter did), with Detectron2's
    ResNet names (§5.4 rules 2–5): ``conv1``/``bn1`` -> ``stem.conv1``/``stem.conv1.norm``, ``layerN`` ->
    ``res(N+1)``, ``bnK`` -> ``convK.norm``, ``downsample.0``/``.1`` -> ``shortcut``/``shortcut.norm``. ``fc`` and
    the BN ``num_batches_tracked`` counters (Detectron2's FrozenBN has none) are dropped and reported. The YAML
    fragment Detectron2 needs for such weights (torchvision RGB mean/std, ``STRIDE_IN_1X1 False``, ``FORMAT RGB``;
    for R18/R34 the BasicBlock settings) is printed and written next to OUTPUT (``OUTPUT.yaml`` with the suffix
    replaced). The file is checked against the key sets of a Detectron2 R-FPN and R-C4 model with Detectron2's
    suffix matching (:func:`suffix_match`): FPN takes every backbone key; **R18/R34-C4 takes only part of res5**
    (``Res5ROIHeads`` always builds Bottleneck blocks, §5.5.1), which is printed as a loud warning.

    MobileNetV2 is refused: Detectron2 itself has no MobileNetV2 backbone (KDEP's detection runs used a
    ``build_mnv2_fpn_backbone`` of their own bundled copy), so a ``.pkl`` of MobileNetV2 keys would match nothing
    in a stock Detectron2 model — silently. Use ``--to semseg`` (torchvision or ``--layout tonylins`` keys) for
    such a fork, or ``detection/train_net.py`` (torchvision Faster R-CNN) here.

``--to semseg``
    A torchvision-format backbone state_dict (``torch.save``), head removed, verified by loading it strictly
    (minus ``fc``/``classifier``) into torchvision's ``resnet*`` / ``mobilenet_v2`` and into the
    segmentation_models_pytorch encoder of the same name (torchvision names without the head). MobileNetV2 is
    written in torchvision's layout unless ``--layout tonylins`` (KDEP's semseg MobileNetV2 keys).

Every problem (unreadable file, an architecture the target cannot take, ``--arch`` not matching the weights) is one
``error: ...`` line and exit status 1.
"""
from __future__ import annotations

import argparse
import pickle
import re
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch

from kdvision.core.backbones import (build_torchvision, canonical_arch, check_arch, detect_arch, load_backbone,
                                     read_backbone, torchvision_to_tonylins)
from kdvision.core.checkpoint import atomic_write, save_atomic
from kdvision.core.errors import CheckpointError, ConfigError

HEAD = ("fc.", "classifier.")
PIXEL_MEAN = (123.675, 116.280, 103.530)  # torchvision's ImageNet mean / std × 255, RGB order
PIXEL_STD = (58.395, 57.120, 57.375)
#: Detectron2 ResNet depth -> (blocks per stage res2..res5, bottleneck?)
D2_RESNETS = {"R18": (18, (2, 2, 2, 2), False), "R34": (34, (3, 4, 6, 3), False), "R50": (50, (3, 4, 6, 3), True),
              "R101": (101, (3, 4, 23, 3), True), "R152": (152, (3, 8, 36, 3), True)}
_SHOW = 4


def _fmt(keys) -> str:
    keys = list(keys)
    return ", ".join(keys[:_SHOW]) + (f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


# -- torchvision -> Detectron2 names -------------------------------------------------------------------------------
def detectron2_name(key: str) -> str | None:
    """Detectron2's name of a torchvision ResNet key (§5.4 rules 2–5); None for keys Detectron2 has no place for
    (``fc.*``, BN ``num_batches_tracked``)."""
    if key.startswith("fc.") or key.endswith("num_batches_tracked"):
        return None
    if not key.startswith("layer"):
        key = "stem." + key
    key = re.sub(r"^layer([1-4])\.", lambda m: f"res{int(m.group(1)) + 1}.", key)
    key = re.sub(r"(^|\.)bn([1-3])\.", r"\1conv\2.norm.", key)
    key = key.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")
    return key


def to_detectron2(sd: Mapping[str, torch.Tensor]) -> tuple["OrderedDict[str, torch.Tensor]", list[str]]:
    """The renamed dict and the torchvision keys left out."""
    out, dropped = OrderedDict(), []
    for k, v in sd.items():
        new = detectron2_name(k)
        if new is None:
            dropped.append(k)
        else:
            out[new] = v
    return out, dropped


# -- Detectron2 model key sets and its suffix matching (for the report) --------------------------------------------
def detectron2_resnet_shapes(arch: str, prefix: str = "", *, stages=(2, 3, 4, 5)) -> dict[str, tuple[int, ...]]:
    """Parameter/buffer shapes of Detectron2's ResNet (FrozenBN: weight, bias, running_mean, running_var), built
    from its block structure: BasicBlock ``conv1, conv2`` (R18/R34, RES2_OUT_CHANNELS 64) or Bottleneck
    ``conv1..conv3`` (R50+, 256), ``shortcut`` where a block's input and output channels differ."""
    _, blocks, bottleneck = D2_RESNETS[arch]
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, cout: int, cin: int, k: int) -> None:
        shapes[f"{prefix}{name}.weight"] = (cout, cin, k, k)
        for b in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}{name}.norm.{b}"] = (cout,)

    if 1 in stages:
        conv("stem.conv1", 64, 3, 7)
    cin = 64
    for s, n in zip((2, 3, 4, 5), blocks):
        out = (256 if bottleneck else 64) * 2 ** (s - 2)
        mid = 64 * 2 ** (s - 2)
        for b in range(n):
            if s in stages:
                if bottleneck:
                    conv(f"res{s}.{b}.conv1", mid, cin, 1)
                    conv(f"res{s}.{b}.conv2", mid, mid, 3)
                    conv(f"res{s}.{b}.conv3", out, mid, 1)
                else:
                    conv(f"res{s}.{b}.conv1", out, cin, 3)
                    conv(f"res{s}.{b}.conv2", out, out, 3)
                if cin != out:
                    conv(f"res{s}.{b}.shortcut", out, cin, 1)
            cin = out
    return shapes


def detectron2_model_shapes(arch: str, meta: str) -> dict[str, tuple[int, ...]]:
    """Backbone shapes of a Detectron2 ``meta`` model: ``"fpn"`` (``backbone.bottom_up.*``, every stage) or ``"c4"``
    (stem..res4 under ``backbone.``; res5 under ``roi_heads.res5`` built by ``Res5ROIHeads`` from three
    **Bottleneck** blocks whatever the depth: 1×1–3×3–1×1, in = RES2_OUT_CHANNELS × 4, bottleneck = out =
    RES2_OUT_CHANNELS × 8 for BasicBlock depths)."""
    if meta == "fpn":
        return detectron2_resnet_shapes(arch, "backbone.bottom_up.", stages=(1, 2, 3, 4, 5))
    shapes = detectron2_resnet_shapes(arch, "backbone.", stages=(1, 2, 3, 4))
    _, _, bottleneck = D2_RESNETS[arch]
    res2 = 256 if bottleneck else 64
    out, mid, cin = res2 * 8, 64 * 8, res2 * 4
    for b in range(3):
        p = f"roi_heads.res5.{b}."
        for name, co, ci, k in (("conv1", mid, cin, 1), ("conv2", mid, mid, 3), ("conv3", out, mid, 1)):
            shapes[f"{p}{name}.weight"] = (co, ci, k, k)
            shapes.update({f"{p}{name}.norm.{x}": (co,) for x in ("weight", "bias", "running_mean", "running_var")})
        if cin != out:
            shapes[f"{p}shortcut.weight"] = (out, cin, 1, 1)
            shapes.update({f"{p}shortcut.norm.{x}": (out,) for x in ("weight", "bias", "running_mean", "running_var")})
        cin = out
    return shapes


@dataclass
class MatchReport:
    """Detectron2's ``matching_heuristics`` applied to one model: what loads, what does not."""

    name: str
    loaded: list[str] = field(default_factory=list)          #: model keys that receive a checkpoint tensor
    shape_mismatch: list[str] = field(default_factory=list)  #: matched by name, skipped for shape
    unmatched: list[str] = field(default_factory=list)       #: model keys no checkpoint key matches (stay random)
    unused: list[str] = field(default_factory=list)          #: checkpoint keys that load nowhere

    @property
    def complete(self) -> bool:
        return not (self.shape_mismatch or self.unmatched or self.unused)

    def __str__(self) -> str:
        total = len(self.loaded) + len(self.shape_mismatch) + len(self.unmatched)
        pct = 100.0 * len(self.loaded) / max(total, 1)
        text = f"{self.name}: {len(self.loaded)}/{total} backbone keys loaded ({pct:.0f} %)"
        for label, keys in (("shape mismatch", self.shape_mismatch), ("left random", self.unmatched),
                            ("checkpoint keys unused", self.unused)):
            if keys:
                text += f"; {len(keys)} {label}: {_fmt(keys)}"
        return text


def suffix_match(model: Mapping[str, tuple[int, ...]], ckpt: Mapping[str, tuple[int, ...]],
                 name: str = "model") -> MatchReport:
    """Detectron2's ``matching_heuristics`` as documented (§5.4): every model key takes the longest checkpoint key
    that is a dot-separated suffix of it; shape mismatches are skipped; one checkpoint key feeding two model keys is
    an error."""
    report, used = MatchReport(name), {}
    for mk, shape in model.items():
        cands = [ck for ck in ckpt if mk == ck or mk.endswith("." + ck)]
        if not cands:
            report.unmatched.append(mk)
            continue
        ck = max(cands, key=len)
        if ck in used:
            raise CheckpointError(f"checkpoint key {ck} matches both {used[ck]} and {mk} in {name}")
        used[ck] = mk
        (report.loaded if tuple(ckpt[ck]) == tuple(shape) else report.shape_mismatch).append(mk)
    report.unused = [ck for ck in ckpt if ck not in used]
    return report


def yaml_fragment(arch: str, weights: str) -> str:
    """The Detectron2 config keys torchvision-style weights need (Detectron2's own converter's docstring, §5.4)."""
    depth, _, bottleneck = D2_RESNETS[arch]
    lines = ["# Detectron2 settings for this torchvision-style backbone (written by kdvision convert_kdep)",
             "MODEL:",
             f"  WEIGHTS: \"{weights}\"",
             f"  PIXEL_MEAN: [{', '.join(f'{v:.3f}' for v in PIXEL_MEAN)}]",
             f"  PIXEL_STD: [{', '.join(f'{v:.3f}' for v in PIXEL_STD)}]",
             "  RESNETS:",
             f"    DEPTH: {depth}",
             "    STRIDE_IN_1X1: False"]
    if not bottleneck:
        lines += ["    RES2_OUT_CHANNELS: 64", "    RES5_DILATION: 1", "    NUM_GROUPS: 1"]
    lines += ["INPUT:", "  FORMAT: \"RGB\""]
    return "\n".join(lines) + "\n"


C4_WARNING = ("WARNING: do not use this {arch} file with a Detectron2 C4 model (faster_rcnn_R_*_C4, KDEP's "
              "Res5ROIHeadsExtraNorm): Res5ROIHeads always builds Bottleneck blocks for res5, so with a BasicBlock "
              "backbone only part of res5 loads and the rest stays random (§5.5.1) — {c4}. Use an FPN config "
              "(e.g. COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml with the fragment above), which loads 100 %.")


# -- the two exports ----------------------------------------------------------------------------------------------
def _arch_of(sd: Mapping[str, torch.Tensor], arch: str | None, source: str) -> str:
    if arch is not None:
        arch = canonical_arch(arch)
        check_arch(sd, arch, source=source)
        return arch
    found = detect_arch(sd)
    if found is None:
        raise CheckpointError(f"{source} is neither a torchvision ResNet nor a MobileNetV2 (first keys: "
                              f"{_fmt(list(sd))}); only those backbones can be exported")
    check_arch(sd, found, source=source)
    return found


def export_detectron2(inp: str | Path, out: str | Path, arch: str | None = None, *, tensors: bool = False,
                      echo=print) -> dict:
    """Write Detectron2's ``.pkl`` and its YAML fragment; return a summary (keys, dropped, reports)."""
    out = Path(out)
    if arch is not None and canonical_arch(arch) == "mnv2":
        raise ConfigError(_MNV2_REFUSAL)
    if out.suffix != ".pkl":
        raise ConfigError(f"Detectron2 applies matching_heuristics only to .pkl files: name OUTPUT *.pkl, not {out}")
    sd = read_backbone(inp)
    arch = _arch_of(sd, arch, str(inp))
    if arch == "mnv2":
        raise ConfigError(_MNV2_REFUSAL)
    d2, dropped = to_detectron2(sd)
    model = {k: (v.detach().clone() if tensors else v.detach().cpu().numpy()) for k, v in d2.items()}
    obj = {"model": model, "__author__": "kdvision", "matching_heuristics": True}
    atomic_write(out, lambda fh: pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL))
    yaml_path = out.with_suffix(".yaml")
    fragment = yaml_fragment(arch, str(out.resolve()))
    atomic_write(yaml_path, lambda fh: fh.write(fragment.encode()))

    shapes = {k: tuple(v.shape) for k, v in d2.items()}
    fpn = suffix_match(detectron2_model_shapes(arch, "fpn"), shapes, f"Detectron2 {arch}-FPN")
    c4 = suffix_match(detectron2_model_shapes(arch, "c4"), shapes, f"Detectron2 {arch}-C4")
    echo(f"read {inp}: torchvision {arch}, {len(sd)} tensors")
    counters = [k for k in dropped if k.endswith("num_batches_tracked")]
    other = [k for k in dropped if k not in counters]
    echo(f"wrote {out}: {len(d2)} Detectron2 keys ({'torch tensors' if tensors else 'numpy arrays'}); dropped "
         f"{len(other)} head keys ({_fmt(other) or 'none'}) and {len(counters)} BN num_batches_tracked counters")
    echo(f"matched: {len(d2)} (e.g. {_fmt(list(d2))}); missing: 0; unexpected: 0 (against Detectron2's {arch} "
         "naming)")
    echo(str(fpn))
    echo(str(c4))
    echo(f"wrote {yaml_path} (merge it into your Detectron2 config):")
    echo(fragment.rstrip())
    if not D2_RESNETS[arch][2]:
        echo(C4_WARNING.format(arch=arch, c4=c4))
    return {"arch": arch, "keys": list(d2), "dropped": dropped, "fpn": fpn, "c4": c4, "yaml": str(yaml_path)}


_MNV2_REFUSAL = ("Detectron2 has no MobileNetV2 backbone (KDEP used its own build_mnv2_fpn_backbone in a bundled "
                 "Detectron2 copy); export with --to semseg [--layout tonylins] for such a fork, or fine-tune with "
                 "detection/train_net.py")


def _smp_encoder(arch: str):
    try:
        import segmentation_models_pytorch as smp
    except ImportError as exc:  # declared by kdvision-tools; a broken install gets one line
        raise ConfigError(f"segmentation_models_pytorch is needed to verify a semseg export ({exc})") from exc
    name = {"R18": "resnet18", "R34": "resnet34", "R50": "resnet50", "R101": "resnet101", "R152": "resnet152",
            "mnv2": "mobilenet_v2"}[arch]
    return name, smp.encoders.get_encoder(name, weights=None)


def export_semseg(inp: str | Path, out: str | Path, arch: str | None = None, *, layout: str = "torchvision",
                  echo=print) -> dict:
    """Write a torchvision-format backbone (head removed), verified against torchvision and the smp encoder."""
    if layout not in ("torchvision", "tonylins"):
        raise ConfigError(f"--layout must be torchvision or tonylins, not {layout!r}")
    sd = read_backbone(inp)
    arch = _arch_of(sd, arch, str(inp))
    if layout == "tonylins" and arch != "mnv2":
        raise ConfigError("--layout tonylins applies to MobileNetV2 only")
    body = OrderedDict((k, v) for k, v in sd.items() if not k.startswith(HEAD))
    head = [k for k in sd if k.startswith(HEAD)]
    tv = load_backbone(build_torchvision(arch), body, skip=HEAD, what=f"torchvision {arch}")
    smp_name, encoder = _smp_encoder(arch)
    enc = load_backbone(encoder, body, skip=HEAD, what=f"smp encoder {smp_name}")
    written = torchvision_to_tonylins(body) if layout == "tonylins" else body
    save_atomic(written, out)
    echo(f"read {inp}: torchvision {arch}, {len(sd)} tensors; head left out: {_fmt(head) or 'none'}")
    echo(f"wrote {out}: {len(written)} tensors, {layout} layout")
    echo(f"check {tv}")
    echo(f"check {enc}")
    return {"arch": arch, "keys": list(written), "head": head, "torchvision": tv, "smp": enc}


# -- command line -------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from kdvision.core.engine.cli import ArgumentParser

    p = ArgumentParser(prog="convert_kdep.py", description=__doc__.split("\n\n")[0],
                       argument_default=None)
    p.add_argument("input", help="checkpoint to export (kdvision run, torchvision .pth, KDEP robustness file)")
    p.add_argument("output", help="file to write (*.pkl for detectron2)")
    p.add_argument("--to", required=True, choices=("detectron2", "semseg"), help="target format")
    p.add_argument("--arch", help="R18, R34, R50, R101 or mnv2 (checked against the weights; default: detected)")
    p.add_argument("--tensors", action="store_true", help="detectron2: store torch tensors (KDEP) not numpy arrays")
    p.add_argument("--layout", default="torchvision", choices=("torchvision", "tonylins"),
                   help="semseg MobileNetV2 key layout (tonylins = KDEP's semseg MobileNetV2)")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return p


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.to == "detectron2":
        if args.layout != "torchvision":
            raise ConfigError("--layout applies to --to semseg only")
        export_detectron2(args.input, args.output, args.arch, tensors=args.tensors)
    else:
        if args.tensors:
            raise ConfigError("--tensors applies to --to detectron2 only")
        export_semseg(args.input, args.output, args.arch, layout=args.layout)
    return 0


def main(argv: list[str] | None = None) -> None:
    from kdvision.core.engine.cli import run_cli

    run_cli(_main, argv)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
