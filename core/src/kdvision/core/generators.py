"""Image generators and discriminators of the data-free / out-of-domain methods.

``create_generator(name, **kw)`` / ``list_generators()`` and ``create_discriminator(name, **kw)`` /
``list_discriminators()`` are the front doors. Parameter names follow the original projects exactly (see
``docs/models.md``), so their generator checkpoints load strictly.

| name | class | output |
|---|---|---|
| ``dfad_a`` (``generator_a``) | DFAD GeneratorA, 32 px | Tanh followed by an affine-free BN: already "normalised image space" |
| ``dfad_b`` (``generator_b``) | DFAD GeneratorB (DCGAN), 128 px | Tanh, [-1, 1] |
| ``cmi`` | CMI ``Generator`` (C₀ = 2·ngf) | Sigmoid, [0, 1] |
| ``cmi_large`` | CMI ``LargeGenerator`` (C₀ = 4·ngf) | Sigmoid, [0, 1] |
| ``mosaickd`` | MosaicKD ``Generator`` = ``LargeGenerator`` with nz = 100 | Sigmoid, [0, 1] |
| discriminator ``patch`` (``patch_discriminator``) | MosaicKD PatchDiscriminator | logit map (no sigmoid), 8×8 for 32 px |

Every generator takes ``z`` of shape (B, nz) or (B, nz, 1, 1).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import Registry

GENERATORS = Registry("generator")
DISCRIMINATORS = Registry("discriminator")

Size = int | tuple[int, int]


def _pair(size: Size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def dcgan_init_(module: nn.Module) -> nn.Module:
    """DCGAN initialisation in place: conv / transposed-conv / linear weights N(0, 0.02) and zero biases;
    BatchNorm weights N(1, 0.02) and zero biases. (CMI's ``reset_model``; GeneratorB's own init.)"""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


class GeneratorA(nn.Module):
    """DFAD GeneratorA (MNIST: nz 100, nc 1; CIFAR: nz 256, nc 3). Default PyTorch initialisation.

    Linear(nz → 2·ngf·s·s) with s = img_size / 4 → BN → up ×2 → Conv3×3 (bias) → BN → LReLU(0.2) → up ×2 →
    Conv3×3 (bias) → BN → LReLU(0.2) → Conv3×3 (bias) → Tanh → BatchNorm2d(nc, affine=False).
    """

    def __init__(self, nz: int = 100, ngf: int = 64, img_size: Size = 32, nc: int = 1) -> None:
        super().__init__()
        self.nz, self.nc = nz, nc
        h, w = _pair(img_size)
        self.init_size = (h // 4, w // 4)
        c0 = ngf * 2
        self.l1 = nn.Sequential(nn.Linear(nz, c0 * self.init_size[0] * self.init_size[1]))
        self.conv_blocks0 = nn.Sequential(nn.BatchNorm2d(c0))
        self.conv_blocks1 = nn.Sequential(
            nn.Conv2d(c0, c0, 3, stride=1, padding=1),
            nn.BatchNorm2d(c0),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.conv_blocks2 = nn.Sequential(
            nn.Conv2d(c0, ngf, 3, stride=1, padding=1),
            nn.BatchNorm2d(ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ngf, nc, 3, stride=1, padding=1),
            nn.Tanh(),
            nn.BatchNorm2d(nc, affine=False),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.l1(z.flatten(1))
        out = out.view(out.shape[0], -1, *self.init_size)
        out = self.conv_blocks0(out)
        out = F.interpolate(out, scale_factor=2, mode="nearest")
        out = self.conv_blocks1(out)
        out = F.interpolate(out, scale_factor=2, mode="nearest")
        return self.conv_blocks2(out)


class GeneratorB(nn.Module):
    """DFAD GeneratorB (DCGAN style) for 128-px images; output in [-1, 1]. DCGAN initialisation.

    Flatten → Linear(nz → 8·ngf·s·s) with s = img_size / 16 → BN → 4 × [ConvTranspose4×4 s2 (no bias) → BN →
    LReLU(0.2)] with widths 8·ngf → 4·ngf → 2·ngf → ngf → ngf → Conv3×3 (bias) → Tanh.
    """

    def __init__(self, nz: int = 256, ngf: int = 64, img_size: Size = 128, nc: int = 3) -> None:
        super().__init__()
        self.nz, self.nc = nz, nc
        h, w = _pair(img_size)
        self.init_size = (h // 16, w // 16)
        self.project = nn.Sequential(
            nn.Flatten(),
            nn.Linear(nz, ngf * 8 * self.init_size[0] * self.init_size[1]),
        )
        layers: list[nn.Module] = [nn.BatchNorm2d(ngf * 8)]
        for cin, cout in ((ngf * 8, ngf * 4), (ngf * 4, ngf * 2), (ngf * 2, ngf), (ngf, ngf)):
            layers += [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]
        layers += [nn.Conv2d(ngf, nc, 3, stride=1, padding=1), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        dcgan_init_(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.project(z.flatten(1))
        out = out.view(out.shape[0], -1, *self.init_size)
        return self.main(out)


class CMIGenerator(nn.Module):
    """CMI-lineage 32-px generator: Linear(nz → C₀·s·s) → BN → [up ×2 → Conv3×3 (no bias) → BN → LReLU(0.2)] ×2
    → Conv3×3 (bias) → Sigmoid, with s = img_size / 4 and conv widths C₀ → 2·ngf → ngf → nc.

    ``c0_mult`` = 2 gives CMI's ``Generator``, 4 its ``LargeGenerator`` (and MosaicKD's generator). Default PyTorch
    initialisation; CMI / RGAL re-initialise with :func:`dcgan_init_` before each synthesis round.
    """

    def __init__(self, nz: int = 256, ngf: int = 64, img_size: Size = 32, nc: int = 3, c0_mult: int = 2) -> None:
        super().__init__()
        self.nz, self.nc = nz, nc
        h, w = _pair(img_size)
        self.init_size = (h // 4, w // 4)
        c0 = ngf * c0_mult
        self.l1 = nn.Sequential(nn.Linear(nz, c0 * self.init_size[0] * self.init_size[1]))
        self.conv_blocks = nn.Sequential(
            nn.BatchNorm2d(c0),                                     # 0
            nn.Upsample(scale_factor=2, mode="nearest"),            # 1
            nn.Conv2d(c0, ngf * 2, 3, stride=1, padding=1, bias=False),  # 2
            nn.BatchNorm2d(ngf * 2),                                # 3
            nn.LeakyReLU(0.2, inplace=True),                        # 4
            nn.Upsample(scale_factor=2, mode="nearest"),            # 5
            nn.Conv2d(ngf * 2, ngf, 3, stride=1, padding=1, bias=False),  # 6
            nn.BatchNorm2d(ngf),                                    # 7
            nn.LeakyReLU(0.2, inplace=True),                        # 8
            nn.Conv2d(ngf, nc, 3, stride=1, padding=1),             # 9
            nn.Sigmoid(),                                           # 10
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.l1(z.flatten(1))
        out = out.view(out.shape[0], -1, *self.init_size)
        return self.conv_blocks(out)


class PatchDiscriminator(nn.Module):
    """MosaicKD patch discriminator: Conv4×4 s2 (bias) → LReLU(0.2) → Conv4×4 s2 (no bias) → BN → LReLU(0.2) →
    Conv1×1 (no bias) to one logit per patch. (B, 3, 32, 32) → (B, 1, 8, 8); no sigmoid (use BCE with logits)."""

    def __init__(self, nc: int = 3, ndf: int = 128) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, 1, 1, stride=1, padding=0, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


# ------------------------------------------------------------------------------------------------ registrations
@GENERATORS.register("dfad_a", aliases=("generator_a",), nz=100, img_size=32, output_range="normalised (BN)")
def dfad_a(nz: int = 100, ngf: int = 64, img_size: Size = 32, nc: int = 1) -> GeneratorA:
    return GeneratorA(nz=nz, ngf=ngf, img_size=img_size, nc=nc)


@GENERATORS.register("dfad_b", aliases=("generator_b",), nz=256, img_size=128, output_range=(-1.0, 1.0))
def dfad_b(nz: int = 256, ngf: int = 64, img_size: Size = 128, nc: int = 3) -> GeneratorB:
    return GeneratorB(nz=nz, ngf=ngf, img_size=img_size, nc=nc)


@GENERATORS.register("cmi", nz=256, img_size=32, output_range=(0.0, 1.0))
def cmi(nz: int = 256, ngf: int = 64, img_size: Size = 32, nc: int = 3) -> CMIGenerator:
    return CMIGenerator(nz=nz, ngf=ngf, img_size=img_size, nc=nc, c0_mult=2)


@GENERATORS.register("cmi_large", nz=256, img_size=32, output_range=(0.0, 1.0))
def cmi_large(nz: int = 256, ngf: int = 64, img_size: Size = 32, nc: int = 3) -> CMIGenerator:
    return CMIGenerator(nz=nz, ngf=ngf, img_size=img_size, nc=nc, c0_mult=4)


@GENERATORS.register("mosaickd", nz=100, img_size=32, output_range=(0.0, 1.0))
def mosaickd(nz: int = 100, ngf: int = 64, img_size: Size = 32, nc: int = 3) -> CMIGenerator:
    return CMIGenerator(nz=nz, ngf=ngf, img_size=img_size, nc=nc, c0_mult=4)


@DISCRIMINATORS.register("patch", aliases=("patch_discriminator",), input_size=(3, 32, 32))
def patch(nc: int = 3, ndf: int = 128) -> PatchDiscriminator:
    return PatchDiscriminator(nc=nc, ndf=ndf)


# ----------------------------------------------------------------------------------------------------- front doors
def create_generator(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered generator; unknown names raise a ConfigError listing the valid ones."""
    return GENERATORS.create(name, **kwargs)


def list_generators(include_aliases: bool = False) -> list[str]:
    return GENERATORS.names(include_aliases=include_aliases)


def generator_info(name: str) -> dict[str, Any]:
    return GENERATORS.meta(name)


def create_discriminator(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered discriminator; unknown names raise a ConfigError listing the valid ones."""
    return DISCRIMINATORS.create(name, **kwargs)


def list_discriminators(include_aliases: bool = False) -> list[str]:
    return DISCRIMINATORS.names(include_aliases=include_aliases)
