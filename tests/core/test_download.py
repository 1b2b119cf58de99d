"""kdvision.core.data.download_dataset against a local HTTP server on loopback.

Tiny but valid archives are built here, torchvision's mirror/URL/md5 attributes are pointed at the server, and the
downloaded files are read back with our own readers. A guard on ``socket.connect`` fails the test if any connection
would leave loopback, and proxies are switched off.
"""
from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import ipaddress
import pickle
import socket
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from kdvision.core.data import DOWNLOADABLE, download_dataset, find_split, get_dataset, list_datasets
from kdvision.core.data.mnist import load_mnist_arrays
from kdvision.core.errors import ConfigError, DataError

from kdv_testutils import LoopbackServer, free_port


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# ------------------------------------------------------------------------------------------------ the server

class Server(LoopbackServer):
    """Serves ``files`` (URL path → bytes) on 127.0.0.1; ``"/truncated/..."`` sends half the promised bytes."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if self.path.startswith("/truncated/"):
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.serve(Handler)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """No proxy, and any connection to a non-loopback address fails the test."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    connect = socket.socket.connect
    attempts: list = []

    def guarded(sock, address):
        attempts.append(address)
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and not ipaddress.ip_address(host).is_loopback:
            raise AssertionError(f"a test tried to connect to {address}")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return attempts


@pytest.fixture
def server():
    with Server() as s:
        yield s


# ------------------------------------------------------------------------------------------------ tiny archives

def idx_gz(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def serve_mnist(server: Server, monkeypatch, *, bad_md5: str | None = None, mirrors=None):
    rng = np.random.default_rng(1)
    arrays = {}
    resources = []
    for prefix, n in (("train", 10), ("t10k", 10)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.permutation(10).astype(np.uint8)
        arrays[prefix] = (images, labels)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte.gz"
            body = idx_gz(arr)
            server.files[f"/mnist/{name}"] = body
            resources.append((name, bad_md5 if bad_md5 and kind.startswith("images") else md5(body)))
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", mirrors or [f"{server.url}/mnist/"])
    monkeypatch.setattr(torchvision.datasets.MNIST, "resources", resources)
    return arrays


def cifar_archive(name: str, n: int = 3):
    """A tar.gz in CIFAR's python layout; returns (bytes, {split: (data, labels)}, {member: md5})."""
    rng = np.random.default_rng(2)
    tv = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    key, k = ("labels", 10) if name == "cifar10" else ("fine_labels", 100)
    members, arrays, sums = {}, {}, {}
    for split, lst in (("train", tv.train_list), ("test", tv.test_list)):
        datas, labs = [], []
        for fname, _ in lst:
            data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            labels = [int(v) for v in rng.integers(0, k, n)]
            members[fname] = pickle.dumps({"batch_label": fname, key: labels, "data": data}, protocol=2)
            datas.append(data)
            labs += labels
        arrays[split] = (np.concatenate(datas), np.asarray(labs))
    meta_key = tv.meta["key"]
    members[tv.meta["filename"]] = pickle.dumps({meta_key: [f"class{i}" for i in range(k)]}, protocol=2)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for fname, body in members.items():
            info = tarfile.TarInfo(f"{tv.base_folder}/{fname}")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        sums = {fname: md5(body) for fname, body in members.items()}
    return buf.getvalue(), arrays, sums


def serve_cifar(server: Server, monkeypatch, name: str, *, tgz_md5: str | None = None):
    tv = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    body, arrays, sums = cifar_archive(name)
    server.files[f"/cifar/{tv.filename}"] = body
    monkeypatch.setattr(tv, "url", f"{server.url}/cifar/{tv.filename}")
    monkeypatch.setattr(tv, "tgz_md5", tgz_md5 or md5(body))
    monkeypatch.setattr(tv, "train_list", [[f, sums[f]] for f, _ in tv.train_list])
    monkeypatch.setattr(tv, "test_list", [[f, sums[f]] for f, _ in tv.test_list])
    monkeypatch.setattr(tv, "meta", {**tv.meta, "md5": sums[tv.meta["filename"]]})
    return arrays


def serve_svhn(server: Server, monkeypatch, tmp_path: Path):
    import scipy.io

    rng = np.random.default_rng(3)
    split_list, arrays = {}, {}
    for split in ("train", "test", "extra"):
        x = rng.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)
        y = np.array([[10], [1], [2], [9], [10]], dtype=np.uint8)  # 10 is the digit 0
        file = tmp_path / f"src_{split}.mat"
        scipy.io.savemat(str(file), {"X": x, "y": y})
        body = file.read_bytes()
        server.files[f"/svhn/{split}_32x32.mat"] = body
        split_list[split] = [f"{server.url}/svhn/{split}_32x32.mat", f"{split}_32x32.mat", md5(body)]
        arrays[split] = (x, y)
    monkeypatch.setattr(torchvision.datasets.SVHN, "split_list", split_list)
    return arrays


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ------------------------------------------------------------------------------------------------ downloads

def test_mnist_downloads_into_the_readers_layout(server, monkeypatch, tmp_path, loopback_only):
    arrays = serve_mnist(server, monkeypatch)
    root = tmp_path / "data"  # created by the download
    download_dataset("mnist", root)
    assert find_split("mnist", root, "train") and find_split("mnist", root, "test")
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = load_mnist_arrays(root, split)
        np.testing.assert_array_equal(images, arrays[prefix][0])
        np.testing.assert_array_equal(labels, arrays[prefix][1])
    ds = get_dataset("mnist", root, "test", normalize=False)
    assert len(ds) == 10 and ds.targets == arrays["t10k"][1].tolist()
    assert tuple(ds[0][0].shape) == (1, 32, 32)
    # torchvision's own layout: compressed and extracted files side by side, nothing else left behind
    raw = [f"MNIST/raw/{p}-{k}-ubyte{gz}" for p in ("t10k", "train") for k in ("images-idx3", "labels-idx1")
           for gz in ("", ".gz")]
    assert files_under(root) == sorted(["MNIST", "MNIST/raw", *raw])
    assert loopback_only and all(addr[0] == "127.0.0.1" for addr in loopback_only)
    # present: a second call fetches nothing
    seen = len(server.requests)
    download_dataset("mnist", root)
    assert len(server.requests) == seen


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_downloads_into_the_readers_layout(server, monkeypatch, tmp_path, name):
    arrays = serve_cifar(server, monkeypatch, name)
    download_dataset(name, tmp_path)
    tv = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    for split in ("train", "test"):
        ds = get_dataset(name, tmp_path, split, normalize=False)
        data, labels = arrays[split]
        assert torch.equal(ds.images, torch.from_numpy(data.reshape(-1, 3, 32, 32)))
        assert ds.targets == labels.tolist()
        x, y = ds[1]
        assert torch.allclose(x, torch.from_numpy(data[1].reshape(3, 32, 32)).float() / 255) and y == labels[1]
    members = [f for f, _ in tv.train_list + tv.test_list] + [tv.meta["filename"]]
    assert files_under(tmp_path) == sorted([tv.base_folder] + [f"{tv.base_folder}/{f}" for f in members])
    assert server.requests.count(f"/cifar/{tv.filename}") >= 1


def test_svhn_downloads_train_and_test_by_default_extra_on_request(server, monkeypatch, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    arrays = serve_svhn(server, monkeypatch, src)
    root = tmp_path / "data"
    download_dataset("svhn", root)
    assert files_under(root) == ["test_32x32.mat", "train_32x32.mat"]
    for split in ("train", "test"):
        ds = get_dataset("svhn", root, split, normalize=False)
        x, y = arrays[split]
        assert torch.equal(ds.images, torch.from_numpy(np.transpose(x, (3, 2, 0, 1)).copy()))
        assert ds.targets == [0, 1, 2, 9, 0]  # 10 → 0
    download_dataset("svhn", root, splits=("extra",))
    assert find_split("svhn", root, "extra")
    assert "/svhn/extra_32x32.mat" in server.requests


# ------------------------------------------------------------------------------------------------ failures

def assert_one_line(exc: pytest.ExceptionInfo, *parts: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    for part in parts:
        assert part in msg, msg
    assert exc.value.__cause__ is None and (exc.value.__context__ is None or exc.value.__suppress_context__)
    return msg


def test_checksum_mismatch_is_one_line_and_leaves_nothing(server, monkeypatch, tmp_path):
    serve_mnist(server, monkeypatch, bad_md5="0" * 32)
    with pytest.raises(DataError) as exc:
        download_dataset("mnist", tmp_path)
    assert_one_line(exc, f"{server.url}/mnist/train-images-idx3-ubyte.gz", "checksum mismatch",
                    "expected 00000000000000000000000000000000")
    # nothing that looks like data (no partial archive, no staging folder)
    assert files_under(tmp_path) in ([], ["MNIST", "MNIST/raw"])
    assert not find_split("mnist", tmp_path, "train")

    serve_cifar(server, monkeypatch, "cifar10", tgz_md5="f" * 32)
    with pytest.raises(DataError) as exc:
        download_dataset("cifar10", tmp_path / "c")
    assert_one_line(exc, f"{server.url}/cifar/cifar-10-python.tar.gz", "checksum mismatch")
    assert files_under(tmp_path / "c") == []


def test_server_down_is_one_line_naming_the_url(monkeypatch, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setattr(torchvision.datasets.SVHN, "split_list",
                        {**torchvision.datasets.SVHN.split_list,
                         "train": [f"{url}/train_32x32.mat", "train_32x32.mat", "0" * 32],
                         "test": [f"{url}/test_32x32.mat", "test_32x32.mat", "0" * 32]})
    with pytest.raises(DataError) as exc:
        download_dataset("svhn", tmp_path)
    msg = assert_one_line(exc, f"downloading {url}/", "failed: ")
    assert "refused" in msg.lower(), msg
    assert files_under(tmp_path) == []
    # every MNIST mirror is tried and named
    other = f"http://127.0.0.1:{free_port()}/"
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [f"{url}/", other])
    with pytest.raises(DataError) as exc:
        download_dataset("mnist", tmp_path)
    assert_one_line(exc, f"{url}/train-images-idx3-ubyte.gz", f"{other}train-images-idx3-ubyte.gz")
    assert files_under(tmp_path) in ([], ["MNIST", "MNIST/raw"])


def test_http_errors_and_truncated_transfers(server, monkeypatch, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    serve_svhn(server, monkeypatch, src)
    split_list = dict(torchvision.datasets.SVHN.split_list)
    split_list["test"] = [f"{server.url}/nope/test_32x32.mat", "test_32x32.mat", "0" * 32]
    monkeypatch.setattr(torchvision.datasets.SVHN, "split_list", split_list)
    root = tmp_path / "data"
    with pytest.raises(DataError) as exc:
        download_dataset("svhn", root, splits=("test",))
    assert_one_line(exc, f"{server.url}/nope/test_32x32.mat", "HTTP 404")
    # the server closes the connection half-way: no partial file stays behind
    body = server.files["/svhn/test_32x32.mat"]
    server.files["/truncated/test_32x32.mat"] = body
    split_list["test"] = [f"{server.url}/truncated/test_32x32.mat", "test_32x32.mat", md5(body)]
    with pytest.raises(DataError) as exc:
        download_dataset("svhn", root, splits=("test",))
    assert_one_line(exc, f"{server.url}/truncated/test_32x32.mat", "failed: ")
    assert files_under(root) == [] and not find_split("svhn", root, "test")


@pytest.mark.parametrize("name", sorted(set(list_datasets()) - set(DOWNLOADABLE)))
def test_datasets_without_a_download_source_say_so(name, tmp_path, loopback_only):
    with pytest.raises(DataError, match=rf"^dataset '{name}' cannot be downloaded: .*\(downloadable: mnist, "
                                        rf"cifar10, cifar100, svhn\)$") as exc:
        download_dataset(name, tmp_path)
    assert_one_line(exc)
    assert not loopback_only  # not even a connection attempt


def test_download_arguments_are_checked(tmp_path):
    assert "caltech101" in list_datasets() and "digits" in list_datasets()
    with pytest.raises(DataError, match="embedded in the toolkit"):
        download_dataset("digits", tmp_path)
    with pytest.raises(ConfigError, match="unknown dataset 'mnsit'"):
        download_dataset("mnsit", tmp_path)
    with pytest.raises(DataError, match=r"dataset 'svhn' has no split 'val'; valid: train, test, extra"):
        download_dataset("svhn", tmp_path, splits=("val",))
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is not a directory"):
        download_dataset("mnist", tmp_path / "file")


# ------------------------------------------------------------------------------------------------ the scripts' flag

@pytest.mark.parametrize("script", ["dfad_mnist", "train_teacher"])
def test_the_scripts_download_flag_fetches_the_data_then_trains(script, server, monkeypatch, tmp_path, capsys):
    """``dfad_mnist.py --download`` / ``train_teacher.py --download``, as the originals did on first use: the data
    comes from the (loopback) mirror into --data_root and the run evaluates on it."""
    import json

    import kdvision.classification.dfad  # noqa: F401  (registers the entry scripts)
    import kdvision.classification.teacher  # noqa: F401
    from kdvision.core.models import create_model
    from kdvision.core.recipes.base import ENTRIES

    serve_mnist(server, monkeypatch)
    root = tmp_path / "data"
    argv = ["--download", "--data_root", str(root), "--epochs", "1", "--iters-per-epoch", "1", "--batch_size", "4",
            "--device", "cpu", "--no-progress", "--output", str(tmp_path / "run")]
    if script == "dfad_mnist":
        torch.save(create_model("lenet5").state_dict(), tmp_path / "mnist-lenet5.pt")
        argv += ["--ckpt", str(tmp_path / "mnist-lenet5.pt"), "--set", "ngf=8"]
    else:
        argv += ["--dataset", "mnist", "--model", "lenet5"]
    with pytest.raises(SystemExit) as exc:
        ENTRIES[script].main(argv)
    assert exc.value.code == 0, capsys.readouterr().err
    assert find_split("mnist", root, "train") and find_split("mnist", root, "test")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("acc" in r for r in records if r["split"] == "test")  # evaluated on the 10 downloaded test digits
    assert server.requests and all(path.startswith("/mnist/") for path in server.requests)
