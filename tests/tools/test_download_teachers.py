"""tools/download_teachers.py against a loopback HTTP server that serves a fixture teacher archive.

The archive is written here: the six ``cifar_teachers/<arch>_vanilla/ckpt_epoch_240.pth`` members of the
``repdistiller-cifar100`` set, each a tiny ``torch.save({'model': state_dict, ...})``. The server honours HTTP
``Range`` (206 + ``Content-Range``) and records every request, so resuming can be asserted. A guard on
``socket.connect`` fails an in-process test that would leave loopback; proxies are switched off.
"""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import ipaddress
import re
import socket
import tarfile
from pathlib import Path

import pytest
import torch

from kdvision.core.data.download import download_file, partial_path
from kdvision.core.errors import DataError
from kdvision.tools import download_teachers as dt

from kdv_testutils import LoopbackServer, free_port, one_line_error, run_script

SCRIPT = "tools/download_teachers.py"
SET = dt.SETS["repdistiller-cifar100"]
ARCHS = ("resnet56", "resnet110", "resnet32x4", "ResNet50", "wrn_40_2", "vgg13")
DEST = Path("checkpoints/teachers/cifar100")


# ------------------------------------------------------------------------------------------------ fixture archive

def teacher_bytes(i: int) -> bytes:
    """A RepDistiller-style container around a tiny state_dict (distinct per teacher)."""
    buf = io.BytesIO()
    g = torch.Generator().manual_seed(i)
    torch.save({"epoch": 240, "model": {"fc.weight": torch.randn(3, 2, generator=g), "fc.bias": torch.zeros(3)},
                "accuracy": 70.0 + i}, buf)
    return buf.getvalue()


def add_file(tar: tarfile.TarFile, name: str, body: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(body)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(body))


def make_archive(extra=None, drop: str | None = None, prefix: str = "cifar_teachers/") -> tuple[bytes, dict]:
    """(tar bytes, {relative member: content}); ``extra(tar)`` adds more members, ``drop`` leaves an arch out."""
    bodies = {f"{a}_vanilla/ckpt_epoch_240.pth": teacher_bytes(i) for i, a in enumerate(ARCHS) if a != drop}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dirinfo = tarfile.TarInfo(prefix.rstrip("/"))
        dirinfo.type = tarfile.DIRTYPE
        tar.addfile(dirinfo)
        for rel, body in bodies.items():
            add_file(tar, prefix + rel, body)
        if extra:
            extra(tar)
    return buf.getvalue(), bodies


@pytest.fixture(scope="module")
def archive() -> tuple[bytes, dict]:
    return make_archive()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------------------ the server

class Server(LoopbackServer):
    """Serves ``files`` (URL path → bytes) on 127.0.0.1 with Range support; records (path, Range header).
    ``cut_next``: the next full transfer sends only that many bytes and closes the connection."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.cut_next: int | None = None
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - http.server's naming
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m:
                    start = int(m.group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                part = body[start:]
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                if server.cut_next is not None:
                    part, server.cut_next = part[: server.cut_next], None
                    self.close_connection = True
                self.wfile.write(part)
                self.wfile.flush()

            def log_message(self, *args):
                pass

        self.serve(Handler, poll_interval=0.02)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """No proxy (also for the scripts run as subprocesses), and no in-process connection off loopback."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", dt.MIRROR_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    connect = socket.socket.connect

    def guarded(sock, address):
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and not ipaddress.ip_address(host).is_loopback:
            raise AssertionError(f"a test tried to connect to {address}")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture
def server(archive):
    with Server() as s:
        s.files["/rel/cifar_teachers.tar"] = archive[0]
        yield s


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """The entry point in-process: (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        dt.main(argv)
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


def pinned(monkeypatch, digest: str | None) -> None:
    monkeypatch.setitem(dt.SETS, SET.name, dataclasses.replace(SET, sha256=digest))


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def expected_files(bodies: dict) -> list[str]:
    return sorted(str(DEST / rel) for rel in bodies)


def assert_teachers(root: Path, bodies: dict) -> None:
    assert files_under(root) == expected_files(bodies)
    for i, arch in enumerate(ARCHS):
        f = root / DEST / f"{arch}_vanilla" / "ckpt_epoch_240.pth"
        assert f.read_bytes() == bodies[f"{arch}_vanilla/ckpt_epoch_240.pth"]
        ckpt = torch.load(f, map_location="cpu", weights_only=True)
        assert ckpt["accuracy"] == 70.0 + i and set(ckpt["model"]) == {"fc.weight", "fc.bias"}


# ------------------------------------------------------------------------------------------------ the set table

def test_the_set_table():
    assert list(dt.SETS) == ["repdistiller-cifar100"]
    assert SET.url == "https://github.com/megvii-research/mdistiller/releases/download/checkpoints/cifar_teachers.tar"
    assert SET.filename == "cifar_teachers.tar" and SET.dest == str(DEST) and SET.strip == "cifar_teachers"
    assert SET.members == tuple(f"{a}_vanilla/ckpt_epoch_240.pth" for a in ARCHS)
    assert SET.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", SET.sha256)
    assert SET.url_for("http://m.example/x/") == "http://m.example/x/cifar_teachers.tar"


# ------------------------------------------------------------------------------------------------ downloads

def test_download_verify_unpack_then_a_second_run_is_a_no_op(server, archive, tmp_path, monkeypatch, capsys):
    body, bodies = archive
    pinned(monkeypatch, sha(body))
    code, out, err = run(["--set", SET.name, "--root", str(tmp_path), "--mirror", f"{server.url}/rel",
                          "--no-progress"], capsys)
    assert code == 0, err
    assert server.requests == [("/rel/cifar_teachers.tar", None)]
    assert_teachers(tmp_path, bodies)  # and nothing else: no archive, no .partial, no staging folder
    assert not list((tmp_path / DEST).glob(".*"))
    assert f"sha256 verified ({sha(body)})" in out and "6 teacher(s) unpacked" in out
    assert err == ""  # --no-progress: no bar
    # everything present: nothing is downloaded, and it says so
    code, out, err = run(["--set", SET.name, "--root", str(tmp_path), "--mirror", f"{server.url}/rel"], capsys)
    assert code == 0 and len(server.requests) == 1
    assert "all 6 teachers are present" in out and "nothing to download" in out
    # one teacher lost: only it is unpacked again, the others are not touched
    lost = tmp_path / DEST / "vgg13_vanilla" / "ckpt_epoch_240.pth"
    lost.unlink()
    keep = tmp_path / DEST / "resnet56_vanilla" / "ckpt_epoch_240.pth"
    keep.write_bytes(b"the user's own file")
    code, out, err = run(["--set", SET.name, "--root", str(tmp_path), "--mirror", f"{server.url}/rel",
                          "--no-progress", "--keep-archive"], capsys)
    assert code == 0, err
    assert lost.read_bytes() == bodies["vgg13_vanilla/ckpt_epoch_240.pth"]
    assert keep.read_bytes() == b"the user's own file"
    assert "1 teacher(s) unpacked" in out and "(5 already present)" in out
    assert (tmp_path / DEST / "cifar_teachers.tar").read_bytes() == body  # --keep-archive
    # --force: downloaded afresh (the kept archive and the present files notwithstanding), every file replaced
    code, out, err = run(["--set", SET.name, "--root", str(tmp_path), "--mirror", f"{server.url}/rel",
                          "--no-progress", "--force"], capsys)
    assert code == 0, err
    assert len(server.requests) == 3 and server.requests[-1] == ("/rel/cifar_teachers.tar", None)
    assert "6 teacher(s) unpacked" in out
    assert_teachers(tmp_path, bodies)


def test_unpinned_set_prints_the_digest_and_sha256_flag_verifies(server, archive, tmp_path, monkeypatch, capsys):
    body, bodies = archive
    pinned(monkeypatch, None)
    code, out, err = run(["--set", SET.name, "--root", str(tmp_path / "a"), "--mirror", f"{server.url}/rel/",
                          "--no-progress"], capsys)
    assert code == 0, err
    assert f"not pinned; its sha256 is {sha(body)}" in out and f"--sha256 {sha(body)}" in out
    assert_teachers(tmp_path / "a", bodies)
    code, out, err = run(["--set", SET.name, "--root", str(tmp_path / "b"), "--mirror", f"{server.url}/rel",
                          "--sha256", sha(body).upper(), "--no-progress"], capsys)
    assert code == 0, err
    assert "sha256 verified" in out and "not pinned" not in out
    assert_teachers(tmp_path / "b", bodies)


def test_mirror_from_the_environment(server, archive, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(dt.MIRROR_ENV, f"{server.url}/rel")
    code, out, err = run(["--set", SET.name, "--root", str(tmp_path), "--no-progress"], capsys)
    assert code == 0, err
    assert server.requests == [("/rel/cifar_teachers.tar", None)]
    assert_teachers(tmp_path, archive[1])


def test_an_interrupted_download_is_resumed_with_a_range_request(server, archive, tmp_path, monkeypatch, capsys):
    body, bodies = archive
    pinned(monkeypatch, sha(body))
    cut = len(body) // 3
    server.cut_next = cut  # the connection drops after a third of the archive
    argv = ["--set", SET.name, "--root", str(tmp_path), "--mirror", f"{server.url}/rel", "--no-progress"]
    code, out, err = run(argv, capsys)
    part = tmp_path / DEST / "cifar_teachers.tar.partial"
    assert code == 1 and err.count("\n") == 1 and err.startswith("error: downloading ")
    assert "kept in" in err and str(part) in err and "run again to resume" in err
    assert part.read_bytes() == body[:cut]
    assert not (tmp_path / DEST / "cifar_teachers.tar").exists()  # never a partial file under the final name
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert server.requests[-1] == ("/rel/cifar_teachers.tar", f"bytes={cut}-")
    assert f"resuming at {cut} bytes" in out and "sha256 verified" in out
    assert_teachers(tmp_path, bodies)


def test_resume_from_a_truncated_partial_file(server, archive, tmp_path, monkeypatch, capsys):
    """A partial file left by an earlier run (any length): only the rest is requested, the result is exact."""
    body, bodies = archive
    pinned(monkeypatch, sha(body))
    (tmp_path / DEST).mkdir(parents=True)
    (tmp_path / DEST / "cifar_teachers.tar.partial").write_bytes(body[:1000])
    code, out, err = run(["--set", SET.name, "--root", str(tmp_path), "--mirror", f"{server.url}/rel",
                          "--no-progress"], capsys)
    assert code == 0, err
    assert server.requests == [("/rel/cifar_teachers.tar", "bytes=1000-")]
    assert_teachers(tmp_path, bodies)


def test_download_file_range_edge_cases(server, archive, tmp_path, capsys):
    """The core helper: a complete partial file (416) is accepted; one longer than the file starts afresh; a server
    that ignores Range (200) replaces the partial file; progress=True draws a bar."""
    body, _ = archive
    url = f"{server.url}/rel/cifar_teachers.tar"
    dest = tmp_path / "x.tar"
    partial_path(dest).write_bytes(body)
    assert download_file(url, dest, sha256=sha(body), progress=False) == sha(body)
    assert dest.read_bytes() == body and not partial_path(dest).exists()
    assert server.requests[-1] == ("/rel/cifar_teachers.tar", f"bytes={len(body)}-")
    dest.unlink()
    partial_path(dest).write_bytes(body + b"junk")
    assert download_file(url, dest, progress=False) == sha(body)
    assert dest.read_bytes() == body and server.requests[-1] == ("/rel/cifar_teachers.tar", None)
    dest.unlink()
    partial_path(dest).write_bytes(b"stale")
    assert download_file(url, dest, resume=False, progress=False) == sha(body)
    assert dest.read_bytes() == body and server.requests[-1] == ("/rel/cifar_teachers.tar", None)
    dest.unlink()
    capsys.readouterr()
    download_file(url, dest, progress=True, desc="bar-test")
    err = capsys.readouterr().err
    assert "bar-test" in err and "100%" in err, err
    assert dest.read_bytes() == body


# ------------------------------------------------------------------------------------------------ failures

def test_checksum_mismatch_is_one_line_and_removes_the_download(server, archive, tmp_path, monkeypatch, capsys):
    pinned(monkeypatch, "0" * 64)
    code, out, err = run(["--set", SET.name, "--root", str(tmp_path), "--mirror", f"{server.url}/rel",
                          "--no-progress"], capsys)
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith(f"error: downloading {server.url}/rel/cifar_teachers.tar failed: checksum mismatch "
                          f"(sha256 {sha(archive[0])}, expected {'0' * 64}); the file was discarded")
    assert files_under(tmp_path) == []  # no archive, no partial file, no teacher
    # an archive placed by hand that does not match is reported and left where it is
    (tmp_path / DEST / "cifar_teachers.tar").write_bytes(archive[0])
    code, out, err = run(["--set", SET.name, "--root", str(tmp_path), "--no-progress"], capsys)
    assert code == 1 and "does not match the repdistiller-cifar100 checksum" in err and "left in place" in err
    assert files_under(tmp_path) == [str(DEST / "cifar_teachers.tar")]
    assert len(server.requests) == 1  # the hand-placed archive was used, not downloaded


def test_a_manually_placed_archive_is_verified_unpacked_and_kept(archive, tmp_path, monkeypatch, capsys):
    body, bodies = archive
    pinned(monkeypatch, sha(body))
    (tmp_path / DEST).mkdir(parents=True)
    (tmp_path / DEST / "cifar_teachers.tar").write_bytes(body)
    # the published URL is never contacted (the loopback guard would fail the test)
    code, out, err = run(["--set", SET.name, "--root", str(tmp_path), "--no-progress"], capsys)
    assert code == 0, err
    assert "using the archive already at" in out and "sha256 verified" in out
    assert files_under(tmp_path) == sorted(expected_files(bodies) + [str(DEST / "cifar_teachers.tar")])


def malicious(kind: str):
    def extra(tar: tarfile.TarFile) -> None:
        if kind == "dotdot":
            add_file(tar, "cifar_teachers/../../evil.txt", b"x")
        elif kind == "absolute":
            add_file(tar, "/tmp/kdvision-evil.txt", b"x")
        elif kind in ("symlink", "hardlink"):
            info = tarfile.TarInfo("cifar_teachers/passwd")
            info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
            info.linkname = "../../../etc/passwd" if kind == "symlink" else "/etc/passwd"
            tar.addfile(info)
        elif kind == "device":
            info = tarfile.TarInfo("cifar_teachers/null")
            info.type = tarfile.CHRTYPE
            tar.addfile(info)
    return extra


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "device"])
def test_a_malicious_member_refuses_the_whole_archive(kind, server, tmp_path, monkeypatch, capsys):
    body, _ = make_archive(malicious(kind))
    server.files["/bad/cifar_teachers.tar"] = body
    root = tmp_path / "root"
    code, out, err = run(["--set", SET.name, "--root", str(root), "--mirror", f"{server.url}/bad",
                          "--sha256", sha(body), "--no-progress"], capsys)
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith("error: refusing to unpack ") and "not the repdistiller-cifar100 archive" in err
    assert files_under(root) == [str(DEST / "cifar_teachers.tar")]  # nothing unpacked (the archive kept to inspect)
    assert files_under(tmp_path) == [f"root/{DEST / 'cifar_teachers.tar'}"]
    assert not Path("/tmp/kdvision-evil.txt").exists()


def test_links_inside_the_archive_and_other_members_are_ignored(server, tmp_path, capsys):
    def extra(tar):
        info = tarfile.TarInfo("cifar_teachers/latest")
        info.type, info.linkname = tarfile.SYMTYPE, "resnet56_vanilla/ckpt_epoch_240.pth"
        tar.addfile(info)
        add_file(tar, "cifar_teachers/README.txt", b"hello")
    body, bodies = make_archive(extra, prefix="./cifar_teachers/")
    server.files["/ok/cifar_teachers.tar"] = body
    code, out, err = run(["--set", SET.name, "--root", str(tmp_path), "--mirror", f"{server.url}/ok",
                          "--sha256", sha(body), "--no-progress"], capsys)
    assert code == 0, err
    assert "ignored 2 other member(s)" in out
    assert_teachers(tmp_path, bodies)


def test_a_wrong_archive_is_detected_by_its_members(server, tmp_path, capsys):
    body, _ = make_archive(drop="vgg13")
    server.files["/wrong/cifar_teachers.tar"] = body
    server.files["/junk/cifar_teachers.tar"] = b"<html>not a tar</html>"
    code, out, err = run(["--set", SET.name, "--root", str(tmp_path / "a"), "--mirror", f"{server.url}/wrong",
                          "--no-progress"], capsys)
    assert code == 1 and err.count("\n") == 1, err
    assert "is not the repdistiller-cifar100 archive: it has no cifar_teachers/vgg13_vanilla/ckpt_epoch_240.pth" in err
    assert not [f for f in files_under(tmp_path / "a") if f.endswith(".pth")]
    code, out, err = run(["--set", SET.name, "--root", str(tmp_path / "b"), "--mirror", f"{server.url}/junk",
                          "--no-progress"], capsys)
    assert code == 1 and "is not a readable tar archive" in err and err.count("\n") == 1


def test_http_404_is_one_line(server, tmp_path, capsys):
    code, out, err = run(["--set", SET.name, "--root", str(tmp_path), "--mirror", f"{server.url}/nope",
                          "--no-progress"], capsys)
    assert code == 1 and err.count("\n") == 1
    assert f"downloading {server.url}/nope/cifar_teachers.tar failed: HTTP 404" in err and "--mirror" in err


# ------------------------------------------------------------------------------------------------ the script
# (subprocesses, as a user runs it: marked slow by the project's rule; ~1-5 s each, most of it importing torch)

@pytest.mark.slow  # subprocess
def test_script_unknown_set_bad_flags_and_list(tmp_path):
    proc = run_script(SCRIPT, "--set", "cifar-teachers", "--root", tmp_path, timeout=60)
    assert proc.returncode == 1
    assert one_line_error(proc) == "error: unknown teacher set 'cifar-teachers'; valid: repdistiller-cifar100"
    proc = run_script(SCRIPT, "--root", tmp_path, timeout=60)
    assert "--set NAME" in one_line_error(proc) and proc.returncode == 1
    proc = run_script(SCRIPT, "--set", SET.name, "--sha256", "abc", timeout=60)
    assert "--sha256 must be 64 hexadecimal digits" in one_line_error(proc)
    proc = run_script(SCRIPT, "--list", timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("repdistiller-cifar100: ")
    assert SET.url in proc.stdout and "ResNet50_vanilla/ckpt_epoch_240.pth" in proc.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # subprocess
def test_script_offline_is_one_line_naming_the_url_and_the_ways_out(tmp_path):
    base = f"http://127.0.0.1:{free_port()}"
    proc = run_script(SCRIPT, "--set", SET.name, "--root", tmp_path, "--mirror", base, timeout=60)
    line = one_line_error(proc)
    assert proc.returncode == 1
    assert line.startswith(f"error: downloading {base}/cifar_teachers.tar failed: connection refused"), line
    assert "--mirror" in line and str(tmp_path / DEST / "cifar_teachers.tar") in line, line
    assert not [f for f in files_under(tmp_path)]


@pytest.mark.slow  # subprocess
def test_script_downloads_and_second_run_is_a_no_op(server, archive, tmp_path):
    body, bodies = archive
    args = ("--set", SET.name, "--root", tmp_path, "--mirror", f"{server.url}/rel", "--sha256", sha(body))
    proc = run_script(SCRIPT, *args, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # not a terminal: no progress bar
    assert_teachers(tmp_path, bodies)
    proc = run_script(SCRIPT, *args, timeout=60)
    assert proc.returncode == 0 and "nothing to download" in proc.stdout
    assert len(server.requests) == 1
