"""tools/visdom_assets.py: the asset list read from the installed Visdom, installing from a loopback npm registry
(integrity pins, manifest, idempotence, tarball cache, tampered tarballs), and the real assets serving Visdom's own
``python -m visdom.server`` page with every download path blocked."""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

from kdvision.tools import visdom_assets as va
from kdvision.tools.dashboard import free_port

from kdv_testutils import LoopbackServer, run_script


def test_asset_list_comes_from_the_installed_visdom_and_every_file_is_pinned():
    expected = va.expected_files()
    # what visdom 0.2.x's build.py downloads from unpkg, cdn.plot.ly, d3js.org and cdnjs, where it looks for it
    for name in ("js/jquery.min.js", "js/plotly-plotly.min.js", "js/d3.v3.min.js", "css/bootstrap.min.css",
                 "fonts/classnames", "fonts/glyphicons-halflings-regular.svg#glyphicons_halflingsregular",
                 "js/layout-bin-packer.js.map", "js/mathjax/2.7.5/MathJax.js",
                 "js/mathjax/2.7.5/jax/output/SVG/fonts/TeX/Size1/Regular/Main.js"):
        assert name in expected, name
    assert len(expected) == len(set(expected)) >= 29
    assert va.uncovered(expected) == []  # every one comes from a pinned package
    assert va.uncovered(["js/not-a-visdom-file.js"]) == ["js/not-a-visdom-file.js"]
    for pkg in va.PACKAGES:
        assert re.fullmatch(r"\d+\.\d+\.\d+", pkg.version), pkg.spec
        assert re.fullmatch(r"sha512-[A-Za-z0-9+/]{86}==", pkg.integrity), pkg.spec
        assert pkg.tarball_url("https://registry.npmjs.org") == \
            f"https://registry.npmjs.org/{pkg.name}/-/{pkg.name}-{pkg.version}.tgz"


# ------------------------------------------------------------------------------------------ a loopback npm registry

def tarball(files: dict[str, bytes], top: str = "package") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo(f"{top}/evil")  # a link is never followed or written
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    return buf.getvalue()


@pytest.fixture()
def registry():
    """Serves ``/<name>/-/<name>-<version>.tgz`` from ``srv.tarballs`` and records each request path."""
    tarballs: dict[str, bytes] = {}
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            requests.append(self.path)
            body = tarballs.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

    srv = LoopbackServer()
    srv.serve(Handler)
    srv.tarballs, srv.requests = tarballs, requests
    with srv:
        yield srv


def fake_packages(registry) -> list[va.NpmPackage]:
    lib = tarball({"dist/lib.min.js": b"window.lib = 1;", "dist/extra.js": b"// unused", "README.md": b"#"})
    tool = tarball({"MathJax.js": b"MJ", "config/a.js": b"a", "fonts/big/x.otf": b"x" * 100, "docs/i.html": b"d"})
    registry.tarballs["/fakelib/-/fakelib-1.0.0.tgz"] = lib
    registry.tarballs["/faketree/-/faketree-2.0.1.tgz"] = tool
    return [va.NpmPackage("fakelib", "1.0.0", va.integrity_of(lib), files=(("dist/lib.min.js", "js/lib.min.js"),
                                                                            ("dist/lib.min.js", "fonts/lib#frag"))),
            va.NpmPackage("faketree", "2.0.1", va.integrity_of(tool),
                          trees=(va.Tree("", "js/tree/1/", include=(r"MathJax\.js$", r"config/", r"fonts/"),
                                         exclude=(r"fonts/big/",)),))]


def test_install_from_a_registry_is_verified_recorded_and_idempotent(registry, tmp_path):
    static, cache = tmp_path / "static", tmp_path / "cache"
    pkgs = fake_packages(registry)
    first = va.install(static, registry=registry.url, cache_dir=cache, packages=pkgs, check_visdom=False, log=print)
    assert sorted(first.downloaded) == ["fakelib@1.0.0", "faketree@2.0.1"] and len(registry.requests) == 2
    files = sorted(str(p.relative_to(static)) for p in static.rglob("*") if p.is_file())
    assert files == ["fonts/lib#frag", "js/lib.min.js", "js/tree/1/MathJax.js", "js/tree/1/config/a.js",
                     "kdvision-assets.json"]  # only what the table names: no README, docs, excluded fonts, links
    assert (static / "js/lib.min.js").read_bytes() == b"window.lib = 1;"
    manifest = json.loads((static / "kdvision-assets.json").read_text())
    assert manifest["packages"]["fakelib"] == {"version": "1.0.0", "integrity": pkgs[0].integrity,
                                               "tarball": f"{registry.url}/fakelib/-/fakelib-1.0.0.tgz"}
    assert manifest["files"]["js/lib.min.js"] == {"package": "fakelib@1.0.0", "source": "dist/lib.min.js", "size": 15,
                                                  "sha256": hashlib.sha256(b"window.lib = 1;").hexdigest()}

    # a second run finds every file intact: nothing fetched, nothing written
    stamps = {p: p.stat().st_mtime_ns for p in static.rglob("*") if p.is_file()}
    again = va.install(static, registry=registry.url, cache_dir=cache, packages=pkgs, check_visdom=False, log=print)
    assert again.up_to_date and again.unchanged == 4 and len(registry.requests) == 2
    assert {p: p.stat().st_mtime_ns for p in static.rglob("*") if p.is_file()} == stamps

    # a deleted and an edited file are restored from the tarball cache, without the network
    (static / "js/tree/1/config/a.js").unlink()
    (static / "js/lib.min.js").write_bytes(b"tampered")
    fixed = va.install(static, registry=registry.url, cache_dir=cache, packages=pkgs, check_visdom=False, log=print)
    assert sorted(fixed.from_cache) == ["fakelib@1.0.0", "faketree@2.0.1"] and not fixed.downloaded
    assert sorted(fixed.written) == ["js/lib.min.js", "js/tree/1/config/a.js"] and len(registry.requests) == 2
    assert (static / "js/lib.min.js").read_bytes() == b"window.lib = 1;"


def test_a_tarball_that_does_not_match_its_pinned_integrity_is_refused(registry, tmp_path):
    pkgs = fake_packages(registry)
    registry.tarballs["/fakelib/-/fakelib-1.0.0.tgz"] = tarball({"dist/lib.min.js": b"window.evil = 1;"})
    with pytest.raises(va.AssetError, match="fakelib@1.0.0 .* integrity mismatch"):
        va.install(tmp_path / "static", registry=registry.url, cache_dir=tmp_path / "cache", packages=pkgs[:1],
                   check_visdom=False, log=print)
    assert not (tmp_path / "static" / "js").exists() and list((tmp_path / "cache").iterdir()) == []


def test_unreachable_registry_and_missing_member_are_one_line_errors(registry, tmp_path):
    lib = tarball({"dist/other.js": b"x"})
    registry.tarballs["/fakelib/-/fakelib-1.0.0.tgz"] = lib
    pkg = va.NpmPackage("fakelib", "1.0.0", va.integrity_of(lib), files=(("dist/lib.min.js", "js/lib.min.js"),))
    with pytest.raises(va.AssetError, match="fakelib@1.0.0: the tarball lacks dist/lib.min.js"):
        va.install(tmp_path / "s", registry=registry.url, cache_dir=tmp_path / "c", packages=[pkg],
                   check_visdom=False, log=print)
    gone = va.NpmPackage("nosuch", "1.0.0", va.integrity_of(b""), files=(("a.js", "js/a.js"),))
    with pytest.raises(Exception, match="nosuch@1.0.0: .*404.*npm registry"):
        va.install(tmp_path / "s", registry=registry.url, cache_dir=tmp_path / "c", packages=[gone],
                   check_visdom=False, log=print)


@pytest.mark.slow
def test_check_of_an_empty_static_folder_fails_naming_the_make_target(tmp_path):
    proc = run_script("tools/visdom_assets.py", "--check", "--static-dir", tmp_path)
    assert proc.returncode == 1 and "make visdom-assets" in proc.stderr and "js/jquery.min.js" in proc.stderr


# ------------------------------------------------------------------------------------------ the real assets

@pytest.fixture(scope="module")
def real_assets():
    """The pinned assets in the installed Visdom (installed from the npm registry once if missing)."""
    if va.missing_assets():
        try:
            va.install(log=print)
        except Exception as exc:  # no registry: nothing to test against
            pytest.skip(f"Visdom assets missing and the npm registry is unreachable ({exc})")
    return va.default_static_dir()


@pytest.mark.slow
def test_plain_visdom_server_serves_every_asset_of_its_page_with_downloads_blocked(real_assets, tmp_path):
    assert va.missing_assets() == []
    report = va.install(log=print)  # idempotent: nothing fetched, nothing written
    assert report.up_to_date and report.unchanged >= 29
    port = free_port()
    dead = "http://127.0.0.1:9"  # any download attempt of visdom's build.py fails here
    env = {**os.environ, "http_proxy": dead, "https_proxy": dead, "HTTP_PROXY": dead, "HTTPS_PROXY": dead,
           "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost", "PYTHONWARNINGS": "ignore"}
    log = tmp_path / "server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "visdom.server", "-port", str(port), "-env_path",
                                 str(tmp_path / "env"), "-bind_local"], stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        page = None
        for _ in range(150):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                    page = resp.read().decode()
                break
            except OSError:
                assert proc.poll() is None, log.read_text()
                time.sleep(0.2)
        assert page is not None and "<div id=\"app\">" in page, log.read_text()
        urls = re.findall(r'(?:src|href)=["\']?(/static/[^"\'\s>]+)', page)
        assert len(urls) >= 14
        for url in urls:
            if "../" in url:  # /static/../user/style.css: visdom's user-settings handler
                continue
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{url}", timeout=5) as resp:
                assert resp.status == 200 and len(resp.read()) > 0, url
    finally:
        proc.terminate()
        proc.wait(10)
    text = log.read_text()
    assert "Downloading scripts" not in text and "while downloading" not in text, text
