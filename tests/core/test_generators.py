"""Generators and discriminators: keys and sizes from reference/models.md §7, output ranges, registry front doors."""
from __future__ import annotations

import pytest
import torch

from kdvision.core.errors import ConfigError
from kdvision.core.generators import (
    DISCRIMINATORS, GENERATORS, create_discriminator, create_generator, dcgan_init_, list_discriminators,
    list_generators)

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{s}": (() if s == "num_batches_tracked" else (c,)) for s in BN}


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------------ keys and sizes (models.md §7)
def test_dfad_generator_a_keys_and_size():
    g = create_generator("dfad_a", nz=256, nc=3)  # the CIFAR configuration
    want = {"l1.0.weight": (8192, 256), "l1.0.bias": (8192,), **bn("conv_blocks0.0", 128),
            "conv_blocks1.0.weight": (128, 128, 3, 3), "conv_blocks1.0.bias": (128,), **bn("conv_blocks1.1", 128),
            "conv_blocks2.0.weight": (64, 128, 3, 3), "conv_blocks2.0.bias": (64,), **bn("conv_blocks2.1", 64),
            "conv_blocks2.3.weight": (3, 64, 3, 3), "conv_blocks2.3.bias": (3,),
            "conv_blocks2.5.running_mean": (3,), "conv_blocks2.5.running_var": (3,),
            "conv_blocks2.5.num_batches_tracked": ()}
    assert shapes(g) == want and len(want) == 26
    assert round(n_params(g) / 1e6, 3) == 2.329


def test_dfad_generator_a_defaults_are_mnist():
    g = create_generator("generator_a")
    assert g.kd_name == "dfad_a"
    assert shapes(g)["l1.0.weight"] == (8192, 100) and shapes(g)["conv_blocks2.3.weight"] == (1, 64, 3, 3)
    assert g(torch.randn(4, 100)).shape == (4, 1, 32, 32)


def test_dfad_generator_b_keys_and_size():
    g = create_generator("dfad_b")
    want = {"project.1.weight": (32768, 256), "project.1.bias": (32768,), **bn("main.0", 512),
            "main.1.weight": (512, 256, 4, 4), **bn("main.2", 256), "main.4.weight": (256, 128, 4, 4),
            **bn("main.5", 128), "main.7.weight": (128, 64, 4, 4), **bn("main.8", 64),
            "main.10.weight": (64, 64, 4, 4), **bn("main.11", 64),
            "main.13.weight": (3, 64, 3, 3), "main.13.bias": (3,)}
    assert shapes(g) == want
    assert round(n_params(g) / 1e6, 2) == 11.24


def test_cmi_generator_keys_and_size():
    g = create_generator("cmi")
    want = {"l1.0.weight": (8192, 256), "l1.0.bias": (8192,), **bn("conv_blocks.0", 128),
            "conv_blocks.2.weight": (128, 128, 3, 3), **bn("conv_blocks.3", 128),
            "conv_blocks.6.weight": (64, 128, 3, 3), **bn("conv_blocks.7", 64),
            "conv_blocks.9.weight": (3, 64, 3, 3), "conv_blocks.9.bias": (3,)}
    assert shapes(g) == want and len(want) == 21
    assert round(n_params(g) / 1e6, 3) == 2.329


@pytest.mark.parametrize("name,nz,mparams", [("cmi_large", 256, 4.582), ("mosaickd", 100, 2.026)])
def test_large_generator_keys_and_size(name, nz, mparams):
    g = create_generator(name)
    want = {"l1.0.weight": (16384, nz), "l1.0.bias": (16384,), **bn("conv_blocks.0", 256),
            "conv_blocks.2.weight": (128, 256, 3, 3), **bn("conv_blocks.3", 128),
            "conv_blocks.6.weight": (64, 128, 3, 3), **bn("conv_blocks.7", 64),
            "conv_blocks.9.weight": (3, 64, 3, 3), "conv_blocks.9.bias": (3,)}
    assert shapes(g) == want
    assert round(n_params(g) / 1e6, 3) == mparams


def test_patch_discriminator_keys_size_and_output():
    d = create_discriminator("patch_discriminator")
    assert d.kd_name == "patch"
    assert shapes(d) == {"main.0.weight": (128, 3, 4, 4), "main.0.bias": (128,), "main.2.weight": (256, 128, 4, 4),
                         **bn("main.3", 256), "main.5.weight": (1, 256, 1, 1)}
    assert round(n_params(d) / 1e6, 3) == 0.531
    out = d(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 1, 8, 8)
    assert (out < 0).any() and (out > 0).any()  # raw logits, no sigmoid


# ------------------------------------------------------------------------------------------------------- behaviour
@pytest.mark.parametrize("name", list_generators())
def test_every_generator_accepts_flat_and_4d_noise(name):
    g = create_generator(name).eval()
    z = torch.randn(3, g.nz, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = g(z), g(z[:, :, None, None])
    assert a.shape[0] == 3 and a.dim() == 4 and torch.isfinite(a).all()
    assert torch.equal(a, b)


def test_generator_a_output_is_batch_standardised_in_train_mode():
    torch.manual_seed(0)
    g = create_generator("dfad_a", nz=256, nc=3).train()
    x = g(torch.randn(64, 256))
    assert x.shape == (64, 3, 32, 32)
    mean = x.mean(dim=(0, 2, 3))
    var = x.var(dim=(0, 2, 3), unbiased=False)
    assert mean.abs().max() < 1e-4
    assert (var - 1).abs().max() < 0.02  # BN divides by sqrt(var + eps), eps = 1e-5
    assert g.conv_blocks2[5].weight is None and not g.conv_blocks2[5].affine


def test_generator_b_range_and_shapes():
    torch.manual_seed(0)
    g = create_generator("dfad_b").train()
    for z in (torch.randn(2, 256), torch.randn(2, 256, 1, 1)):
        x = g(z)
        assert x.shape == (2, 3, 128, 128)
        assert x.min() >= -1 and x.max() <= 1
    rect = create_generator("dfad_b", img_size=(64, 128), ngf=8)
    assert rect(torch.randn(2, 256)).shape == (2, 3, 64, 128)


def test_generator_b_dcgan_init():
    torch.manual_seed(0)
    g = create_generator("dfad_b")
    assert g.main[1].weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert g.project[1].weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert g.main[0].weight.mean().item() == pytest.approx(1.0, abs=0.01)
    assert 0 < g.main[0].weight.std().item() < 0.04
    assert g.main[0].bias.abs().sum() == 0 and g.main[13].bias.abs().sum() == 0


def test_dcgan_init_resets_cmi_generator():
    torch.manual_seed(0)
    g = dcgan_init_(create_generator("cmi"))
    assert g.conv_blocks[2].weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert g.conv_blocks[0].weight.mean().item() == pytest.approx(1.0, abs=0.01)
    assert g.l1[0].bias.abs().sum() == 0


@pytest.mark.parametrize("name", ["cmi", "cmi_large", "mosaickd"])
def test_cmi_family_outputs_images_in_unit_range(name):
    g = create_generator(name).train()
    x = g(torch.randn(4, g.nz))
    assert x.shape == (4, 3, 32, 32)
    assert x.min() >= 0 and x.max() <= 1


def test_cmi_generator_other_sizes():
    g = create_generator("cmi", nz=64, ngf=8, img_size=64)
    assert g(torch.randn(2, 64)).shape == (2, 3, 64, 64)


# --------------------------------------------------------------------------------------------------------- registry
def test_registered_names():
    assert list_generators() == ["cmi", "cmi_large", "dfad_a", "dfad_b", "mosaickd"]
    assert set(list_generators(include_aliases=True)) >= {"generator_a", "generator_b"}
    assert list_discriminators() == ["patch"]
    assert GENERATORS.resolve("generator_b") == "dfad_b" and DISCRIMINATORS.resolve("patch_discriminator") == "patch"


def test_unknown_generator_lists_valid_names():
    with pytest.raises(ConfigError) as info:
        create_generator("dfad_c")
    msg = str(info.value)
    assert "dfad_c" in msg and all(n in msg for n in ("dfad_a", "dfad_b", "cmi", "cmi_large", "mosaickd"))


def test_unknown_discriminator_lists_valid_names():
    with pytest.raises(ConfigError) as info:
        create_discriminator("pixel")
    assert "pixel" in str(info.value) and "patch" in str(info.value)
