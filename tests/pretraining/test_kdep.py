"""KDEP: PTS, the streamed SVD basis, the teacher wrapper, the seeded subset and the scripts' inputs and errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kdvision.core.data.imagelist import (Lighting, make_subset, read_image_list, resolve_images, write_image_list)
from kdvision.core.errors import CheckpointError, ConfigError, DataError
from kdvision.core.methods.kdep import KDEPTeacher, StreamingMoments, SVDBasis, feature_dim, pts
from kdvision.core.models import build_model
from kdv_testutils import one_line_error, run_script


# ------------------------------------------------------------------------------------------------------------ PTS
@pytest.mark.parametrize("tau,power", [(0.1, 3.0), (0.03, 3.0), (0.2, 2.0)])
def test_pts_is_odd_with_power_law_magnitude(tau, power):
    u = torch.linspace(-5, 5, 1001, dtype=torch.float64)
    out = pts(u, tau, power)
    assert torch.allclose(pts(-u, tau, power), -out, atol=0, rtol=0)  # odd
    assert torch.allclose(out.abs(), (u.abs() / tau) ** (1 / power), atol=1e-12)
    assert torch.all(out[1:] >= out[:-1])  # monotone
    assert pts(torch.tensor([0.1 * 8.0]), 0.1, 3.0).item() == pytest.approx(2.0)  # (0.8 / 0.1)^(1/3)
    assert torch.equal(torch.sign(out), torch.sign(u))


# ------------------------------------------------------------------------------------------------------- SVD basis
def _features(n=300, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ mix * torch.linspace(3, 0.1, d, dtype=torch.float64) + 5


def test_streamed_basis_equals_full_svd():
    x = _features()
    m = StreamingMoments(x.shape[1])
    for chunk in x.split(37):  # uneven batches
        m.update(chunk)
    mean, V, S = m.basis()
    xc = x - x.mean(0)
    U_ref, S_ref, Vh_ref = torch.linalg.svd(xc, full_matrices=False)
    assert torch.allclose(mean, x.mean(0), atol=1e-12)
    assert torch.allclose(S, S_ref, rtol=1e-8, atol=1e-8)
    signs = torch.sign((V * Vh_ref.T).sum(0))  # the SVD fixes no signs: compare columns up to sign
    assert torch.allclose(V, Vh_ref.T * signs, atol=1e-8)
    assert torch.allclose(V.T @ V, torch.eye(x.shape[1], dtype=torch.float64), atol=1e-10)  # orthonormal
    assert torch.allclose((xc @ V).abs(), (U_ref * S_ref).abs(), atol=1e-8)  # projecting reproduces U·S
    assert torch.all(S[:-1] >= S[1:])
    assert torch.all(V[V.abs().argmax(0), torch.arange(V.shape[1])] > 0)  # sign convention


def test_moments_of_shards_add_up_to_the_whole():
    x = _features(n=101, d=6, seed=1)
    whole, a, b = StreamingMoments(6), StreamingMoments(6), StreamingMoments(6)
    whole.update(x)
    a.update(x[:40])
    b.update(x[40:])
    a.n, a.sum, a.outer = a.n + b.n, a.sum + b.sum, a.outer + b.outer  # what all_reduce does over two ranks
    for got, want in zip(a.basis(), whole.basis()):
        assert torch.allclose(got, want, atol=1e-10)
    with pytest.raises(ConfigError):
        StreamingMoments(3).basis()


def _basis(dim=64, k_total=None, sha="a" * 64, seed=0):
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return SVDBasis(mean=torch.randn(dim, dtype=torch.float64), V=q[:, :k_total or dim], S=torch.ones(dim),
                    teacher="resnet20_a", teacher_sha256=sha, images=10)


def test_basis_file_round_trip_and_refusals(tmp_path):
    b = _basis()
    b.save(tmp_path / "basis.pt")
    c = SVDBasis.load(tmp_path / "basis.pt")
    assert torch.allclose(c.V, b.V.float()) and torch.allclose(c.mean, b.mean.float())
    assert (c.teacher, c.teacher_sha256, c.images) == ("resnet20_a", "a" * 64, 10)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="not a KDEP basis file"):
        SVDBasis.load(tmp_path / "weights.pt")
    with pytest.raises(ConfigError, match="64-dimensional but the teacher's feature has 2048"):
        b.check(teacher_dim=2048, student_dim=512, teacher_sha256="a" * 64, allow_other_teacher=False)
    with pytest.raises(ConfigError, match="student's feature has 128 channels but the basis has only 64"):
        b.check(teacher_dim=64, student_dim=128, teacher_sha256="a" * 64, allow_other_teacher=False)
    with pytest.raises(ConfigError, match="computed for teacher checkpoint aaaaaaaaaaaa"):
        b.check(teacher_dim=64, student_dim=64, teacher_sha256="b" * 64, allow_other_teacher=False)
    b.check(teacher_dim=64, student_dim=64, teacher_sha256="b" * 64, allow_other_teacher=True)  # the legacy flag


def test_numpy_basis_files_of_the_original(tmp_path):
    b = _basis(dim=8)
    np.save(tmp_path / "v.npy", b.V.numpy())
    np.save(tmp_path / "mean.npy", b.mean.numpy())
    c = SVDBasis.from_numpy_files(tmp_path / "v.npy", tmp_path / "mean.npy")
    assert torch.equal(c.V, b.V) and c.dim == 8


def test_teacher_target_has_the_student_width_and_the_formula():
    torch.manual_seed(0)
    model = build_model("resnet20_a", 10).eval()
    basis = _basis()
    teacher = KDEPTeacher(model, basis, k=16, tau=0.1, power=3.0)
    assert not any(p.requires_grad for p in teacher.parameters())
    assert {n for n, _ in teacher.named_buffers()} >= {"mean", "proj"} and teacher.proj.shape == (64, 16)
    teacher.train()
    assert not teacher.model.training  # stays in eval mode
    x = torch.randn(3, 3, 32, 32)
    h = teacher.features(x).detach()
    assert h.shape == (3, 64)
    want = pts((h - basis.mean.float()) @ basis.V[:, :16].float(), 0.1, 3.0)
    assert torch.allclose(teacher(x), want, atol=1e-6)
    assert feature_dim(model, (3, 32, 32)) == 64


# -------------------------------------------------------------------------------------------- images and subsets
def _imagenet_like(root, classes=4, per=6, size=(12, 10)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        d = root / f"n{c:08d}"
        d.mkdir(parents=True)
        for i in range(per + c):  # classes of different sizes
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(d / f"img_{i:03d}.png")
    (root / "README.txt").write_text("not a class")
    return root


def test_subset_is_seeded_per_class_and_reproducible(tmp_path):
    src = _imagenet_like(tmp_path / "train")
    a, b, c = make_subset(src, 3, seed=0), make_subset(src, 3, seed=0), make_subset(src, 3, seed=1)
    assert a == b and a != c
    assert len(a) == 12 and all(sum(f.startswith(f"n{k:08d}/") for f in a) == 3 for k in range(4))
    assert len(make_subset(src, 100, seed=0)) == 6 + 7 + 8 + 9  # a small class gives all it has
    with pytest.raises(DataError, match="no class sub-folders"):
        make_subset(tmp_path / "train" / "n00000000", 3, seed=0)
    sha = write_image_list(tmp_path / "list.txt", a, src, per_class=3, seed=0)
    root, files, header = read_image_list(tmp_path / "list.txt")
    assert files == a and root == src.resolve() and header["seed"] == "0"
    assert resolve_images(str(tmp_path / "list.txt"))[2] == sha


def test_make_imagenet_subset_script(tmp_path):
    src = _imagenet_like(tmp_path / "train")
    dst = tmp_path / "imgnet_128k"
    for out in (dst, tmp_path / "again"):
        proc = run_script("pretraining/make_imagenet_subset.py", src, out, "--per-class", 2, "--seed", 5,
                          "--symlinks")
        assert proc.returncode == 0, proc.stderr
    assert (dst / "train.txt").read_text().split("\n", 1)[1] == (tmp_path / "again" / "train.txt").read_text(
    ).split("\n", 1)[1]
    info = json.loads((dst / "subset.json").read_text())
    assert (info["images"], info["classes"], info["seed"]) == (8, 4, 5)
    links = sorted(p.relative_to(dst / "train").as_posix() for p in (dst / "train").rglob("*.png"))
    assert links == read_image_list(dst / "train.txt")[1] and all((dst / "train" / f).is_symlink() for f in links)
    # the original's dataset name resolves to this list under --data_root
    root, files, sha = resolve_images("imgnet_128k", str(tmp_path))
    assert files == links and sha == info["list_sha256"]
    err = one_line_error(run_script("pretraining/make_imagenet_subset.py", tmp_path / "nope", dst))
    assert "image folder not found" in err


def test_lighting_noise():
    img = torch.rand(3, 4, 4)
    assert torch.equal(Lighting(0.0)(img), img)
    torch.manual_seed(0)
    out = Lighting(0.05)(img)
    delta = (out - img)[:, 0, 0]
    assert torch.allclose(out - img, delta.view(3, 1, 1).expand(3, 4, 4))  # one colour shift per image
    assert 0 < delta.abs().max() < 0.1
