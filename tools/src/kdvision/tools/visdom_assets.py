"""Install the static files a Visdom server needs, from the npm registry: ``python tools/visdom_assets.py``.

A Visdom server downloads its JavaScript, CSS and fonts from CDNs (unpkg, cdn.plot.ly, d3js.org, cdnjs) the first
time it starts (``visdom/server/build.py: download_scripts``). On a cluster node without internet the page then
stays blank. This installer fetches the same files from the npm registry instead (the only package index many
clusters mirror), pinned to the versions the installed Visdom asks for, and writes them where Visdom looks for
them (``<site-packages>/visdom/static/{js,css,fonts}``), so ``python -m visdom.server`` serves a working page with
no network at all.

- **Pinned and verified.** Each npm package is pinned to a version and to the registry's ``dist.integrity``
  (SHA-512 of the tarball); a tarball whose digest differs is refused and nothing is written from it.
- **What Visdom expects.** The list of files is read from the installed ``visdom/server/build.py`` (its
  ``ext_files`` and ``mathjax_path``); a Visdom version that expects a file :data:`PACKAGES` does not provide is
  an error naming it, before anything is downloaded.
- **Idempotent.** ``<static>/kdvision-assets.json`` records every installed file's SHA-256, its package and the
  tarball's integrity. A second run that finds every file intact downloads and writes nothing. Tarballs are cached
  in ``~/.cache/kdvision/npm`` (``--cache-dir``), so restoring a deleted file needs no network.
- **Visdom's own check.** ``static/version.built`` is written with the Visdom version once every expected file is
  present: ``download_scripts`` then skips its downloads.
- **Registry.** ``--registry URL`` (default ``$npm_config_registry``, else https://registry.npmjs.org): a mirror
  of the npm registry works the same way (the integrity pins still apply).
"""
from __future__ import annotations

import argparse
import ast
import base64
import hashlib
import io
import json
import os
import re
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from kdvision.core.errors import DataError, KDVisionError

DEFAULT_REGISTRY = "https://registry.npmjs.org"
MANIFEST = "kdvision-assets.json"


class AssetError(KDVisionError):
    """The assets cannot be installed as pinned (integrity mismatch, missing member, unknown Visdom layout)."""


@dataclass(frozen=True)
class Tree:
    """A sub-tree of a package copied as a whole: members under ``src`` whose path (relative to ``src``) matches
    one of ``include`` and none of ``exclude`` (regular expressions, matched at the start) land under ``dest``."""

    src: str
    dest: str
    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()

    def target(self, rel: str) -> str | None:
        if not rel.startswith(self.src):
            return None
        rest = rel[len(self.src):]
        if any(re.match(p, rest) for p in self.include) and not any(re.match(p, rest) for p in self.exclude):
            return self.dest + rest
        return None


@dataclass(frozen=True)
class NpmPackage:
    """One pinned npm package and the files taken from it (paths relative to the tarball's ``package/``)."""

    name: str
    version: str
    integrity: str  #: the registry's ``dist.integrity`` of the tarball ("sha512-<base64>")
    files: tuple[tuple[str, str], ...] = ()  #: (path in the package, destination under ``static/``)
    trees: tuple[Tree, ...] = ()

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    def tarball_url(self, registry: str) -> str:
        base = self.name.rsplit("/", 1)[-1]  # "@scope/name" -> "name"
        return f"{registry.rstrip('/')}/{self.name}/-/{base}-{self.version}.tgz"

    def targets(self, members: Iterable[str]) -> dict[str, str]:
        """Destination -> package path, for the members of the tarball this package installs."""
        members = list(members)
        out = {dest: src for src, dest in self.files}
        for tree in self.trees:
            for rel in members:
                dest = tree.target(rel)
                if dest is not None:
                    out.setdefault(dest, rel)
        return out


_BS = "dist/fonts/glyphicons-halflings-regular"
_MATHJAX_FONTS = r"(fonts/HTML-CSS/(?!TeX/)|jax/output/[^/]+/fonts/(?!TeX/)|extensions/a11y/)"

#: Every package Visdom 0.2.x loads, pinned to the versions its ``build.py`` names (the CDN URLs there: unpkg
#: ``name@version``, cdn.plot.ly's plotly 2.11.1, d3js.org's d3 v3 (3.5.17) and d3-selection-multi v1 (1.0.1),
#: cdnjs's MathJax 2.7.5). Integrities are the registry's ``dist.integrity`` of each tarball.
PACKAGES: tuple[NpmPackage, ...] = (
    NpmPackage("jquery", "3.1.1",
               "sha512-zuiWRmx65Kd1oFGdWLvAjbsumdOBFvs3r1vuqCyKFF79R7exBHNbiNEJ8LR+xkzgfxqBznMD/4Cv6PHXS6mvEw==",
               files=(("dist/jquery.min.js", "js/jquery.min.js"),)),
    NpmPackage("bootstrap", "3.3.7",
               "sha512-qcFaisBrcBhTFkz1IUnGDYnX6ZWfFzH8zOixUDtHW9Ip+r+7MfMFav2rzy7cIHc7rgIg7xjhWBoo1mS/U26j4g==",
               files=(("dist/js/bootstrap.min.js", "js/bootstrap.min.js"),
                      ("dist/css/bootstrap.min.css", "css/bootstrap.min.css"),
                      *((f"{_BS}.{ext}", f"fonts/glyphicons-halflings-regular.{ext}")
                        for ext in ("eot", "woff2", "woff", "ttf", "svg")),
                      # build.py keeps the CSS URL's fragment in the file name it checks for
                      (f"{_BS}.svg", "fonts/glyphicons-halflings-regular.svg#glyphicons_halflingsregular"))),
    NpmPackage("react", "16.2.0",
               "sha512-ZmIomM7EE1DvPEnSFAHZn9Vs9zJl5A9H7el0EGTE6ZbW9FKe/14IYAlPbC8iH25YarEQxZL+E8VW7Mi7kfQrDQ==",
               files=(("umd/react.production.min.js", "js/react-react.min.js"),)),
    NpmPackage("react-dom", "16.2.0",
               "sha512-zpGAdwHVn9K0091d+hr+R0qrjoJ84cIBFL2uU60KvWBPfZ7LPSrfqviTxGHWN0sjPZb2hxWzMexwrvJdKePvjg==",
               files=(("umd/react-dom.production.min.js", "js/react-dom.min.js"),)),
    NpmPackage("react-modal", "3.1.10",
               "sha512-7b77AGWCkdg0YOf/qcYIGCpuwbxRwOA8P3UrUovk4grUNv+idOmHovJAx/Dcd3fuwHtgixxVjpcjVG60985MSA==",
               files=(("dist/react-modal.min.js", "js/react-modal.min.js"),)),
    NpmPackage("plotly.js-dist-min", "2.11.1",
               "sha512-F9WWNht0D3yBLZGHbLoJNfvplXvy+GUPSsA/lCbMuYd/UwzSu6Vmyprxlps9Einw1LDS1hYBrJeioK0lE3ieXA==",
               files=(("plotly.min.js", "js/plotly-plotly.min.js"),)),
    NpmPackage("sjcl", "1.0.7",
               "sha512-xQbiwKfiAj6vyk44ANJ5RRymALRdRZOuRoKNYkWUU404p/RFXmMaay1Z5vRn30GJjkD+psox4Jd38jZojSuNYA==",
               files=(("sjcl.js", "js/sjcl.js"),)),
    NpmPackage("layout-bin-packer", "1.4.0",
               "sha512-dQOZnajbOBGIcS9YlzKrkRtMCGa2oEpyf1zGRn93suphSvPclJe54Sbgtb053GJ21DUk84IBzaeQvjn+Gb10fA==",
               files=(("dist/layout-bin-packer.js", "js/layout_bin_packer.js"),
                      ("dist/layout-bin-packer.js.map", "js/layout-bin-packer.js.map"))),
    NpmPackage("d3", "3.5.17",
               "sha512-yFk/2idb8OHPKkbAL8QaOaqENNoMhIaSHZerk3oQsECwkObkCpJyjYwCe+OHiq6UEdhe1m8ZGARRRO3ljFjlKg==",
               files=(("d3.min.js", "js/d3.v3.min.js"),)),
    NpmPackage("d3-selection-multi", "1.0.1",
               "sha512-mEnRkJ6A+Otd1LuRPV3az+s/RLDmIEhuz/MnT21O2nPcWNH7wZotdIlRjMA4Wpr+n7AESQ5fD8v1J3nL2Mnw9g==",
               files=(("build/d3-selection-multi.js", "js/d3-selection-multi.v1.js"),)),
    NpmPackage("save-svg-as-png", "1.4.17",
               "sha512-7QDaqJsVhdFPwviCxkgHiGm9omeaMBe1VKbHySWU6oFB2LtnGCcYS13eVoslUgq6VZC6Tjq/HddBd1K6p2PGpA==",
               files=(("lib/saveSvgAsPng.js", "js/saveSvgAsPng.js"),)),
    NpmPackage("react-resizable", "1.4.6",
               "sha512-4zLORO51u0/mlDsrVCAA4p266d+3mb2ZMNdiWOotAh/PdnfrRzZhgePmKE08PSQatXVIfMjmyD+Sapay8tmxdQ==",
               files=(("css/styles.css", "css/react-resizable-styles.css"),)),
    NpmPackage("react-grid-layout", "0.16.3",
               "sha512-ytP92EqUjqcFhGzvdeKrK610dQ04GdFwRCWtD6PoeL5wR3liETcFISO7k8RBqnosV86JtXf/DwIfrL0COLs0gg==",
               files=(("css/styles.css", "css/react-grid-layout-styles.css"),)),
    NpmPackage("classnames", "2.2.5",
               "sha512-DTt3GhOUDKhh4ONwIJW4lmhyotQmV2LjNlGK/J2hkwUcqcbKkCLAdJPtxQnxnlc7SR3f1CEXCyMmc7WLUsWbNA==",
               files=(("index.js", "fonts/classnames"),)),  # unpkg's bare "classnames@2.2.5" is its index.js
    # MathJax loads further files of its own tree at run time (input/output jax, extensions, TeX fonts): the tree
    # goes in whole, without the a11y extension and the non-TeX font sets (tens of MB nobody on a dashboard uses).
    NpmPackage("mathjax", "2.7.5",
               "sha512-OzsJNitEHAJB3y4IIlPCAvS0yoXwYjlo2Y4kmm9KQzyIBZt2d8yKRalby3uTRNN4fZQiGL2iMXjpdP1u2Rq2DQ==",
               trees=(Tree("", "js/mathjax/2.7.5/",
                           include=(r"MathJax\.js$", r"config/", r"extensions/", r"jax/", r"localization/en/",
                                    r"fonts/HTML-CSS/TeX/(woff|otf)/"),
                           exclude=(_MATHJAX_FONTS,)),)),
)


# ---------------------------------------------------------------------------------------------------------------
# what the installed Visdom expects


def visdom_dir() -> Path:
    """The installed ``visdom`` package folder (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("visdom")
    if spec is None or spec.origin is None:
        raise AssetError("visdom is not installed (pip install 'kdvision-core[visdom]', or `make install`)")
    return Path(spec.origin).parent


def visdom_version(vdir: Path | None = None) -> str:
    path = (vdir or visdom_dir()) / "VERSION"
    return path.read_text().strip() if path.is_file() else "no_version_file"


def default_static_dir() -> Path:
    return visdom_dir() / "static"


def _literal(node: ast.AST, names: dict[str, object]) -> object:
    """A string built from literals, %-formatting and + of names already known (build.py's URL strings)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        left, right = _literal(node.left, names), _literal(node.right, names)
        if isinstance(node.op, ast.Add):
            return left + right  # type: ignore[operator]
        return left % (tuple(right) if isinstance(right, list) else right)  # type: ignore[operator]
    if isinstance(node, (ast.Tuple, ast.List)):
        return [_literal(e, names) for e in node.elts]
    raise ValueError(ast.dump(node))


def expected_files(vdir: Path | None = None) -> list[str]:
    """The files (relative to ``static/``) that the installed Visdom's ``download_scripts`` fetches and checks for:
    its ``ext_files`` names, placed in js/, css/ or fonts/ by their extension as it does, and its MathJax files."""
    build = (vdir or visdom_dir()) / "server" / "build.py"
    try:
        tree = ast.parse(build.read_text())
        names: dict[str, object] = {}
        ext_files: dict[str, str] | None = None
        mathjax: list[str] | None = None
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
                continue
            target = node.targets[0].id
            try:
                value = (dict(zip((_literal(k, names) for k in node.value.keys),  # type: ignore[union-attr]
                                  (_literal(v, names) for v in node.value.values)))  # type: ignore[union-attr]
                         if isinstance(node.value, ast.Dict) else _literal(node.value, names))
            except (ValueError, TypeError, AttributeError):
                continue
            names[target] = value
            if target == "ext_files":
                ext_files = value  # type: ignore[assignment]
            elif target == "mathjax_path":
                mathjax = value  # type: ignore[assignment]
        if ext_files is None or mathjax is None or "cdnjs_url" not in names:
            raise ValueError("ext_files, mathjax_path or cdnjs_url not found")
    except (OSError, SyntaxError, ValueError) as exc:
        raise AssetError(f"cannot read the list of assets from {build} ({exc}); this Visdom version is not "
                         f"supported by the installer") from None
    out = []
    for name in ext_files.values():
        sub = "js" if name.endswith((".js", ".js.map")) else "css" if name.endswith(".css") else "fonts"
        out.append(f"{sub}/{name}")
    mathjax_dir = "/".join(str(names["cdnjs_url"]).rstrip("/").split("/")[-2:])  # "mathjax/2.7.5"
    for path in mathjax:
        parts = path.split("/")
        out.append("/".join(["js", mathjax_dir, *parts[:-1], parts[-1].split("?")[0]]))
    return out


def provided_files(packages: Iterable[NpmPackage] = PACKAGES) -> set[str]:
    """Destinations the packages' explicit ``files`` provide, and the prefixes their trees cover."""
    return {dest for p in packages for _, dest in p.files}


def uncovered(expected: Iterable[str], packages: Iterable[NpmPackage] = PACKAGES) -> list[str]:
    """Expected files that no package provides (explicitly or through a tree that would include them)."""
    packages = list(packages)
    files = provided_files(packages)
    out = []
    for dest in expected:
        if dest in files:
            continue
        if any(dest.startswith(t.dest) and t.target(t.src + dest[len(t.dest):]) for p in packages for t in p.trees):
            continue
        out.append(dest)
    return out


# ---------------------------------------------------------------------------------------------------------------
# install


def integrity_of(data: bytes, algo: str = "sha512") -> str:
    return f"{algo}-" + base64.b64encode(hashlib.new(algo, data).digest()).decode()


def _check_integrity(data: bytes, expected: str, what: str) -> None:
    algo = expected.split("-", 1)[0]
    if algo not in ("sha512", "sha384", "sha256", "sha1"):
        raise AssetError(f"{what}: unsupported integrity {expected!r}")
    got = integrity_of(data, algo)
    if got != expected:
        raise AssetError(f"{what}: integrity mismatch (expected {expected}, got {got}); refusing it")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kdvision" / "npm"


def default_registry() -> str:
    return os.environ.get("npm_config_registry") or os.environ.get("NPM_CONFIG_REGISTRY") or DEFAULT_REGISTRY


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass
class Report:
    static_dir: Path
    downloaded: list[str] = field(default_factory=list)  #: package specs fetched from the registry
    from_cache: list[str] = field(default_factory=list)  #: package specs read from the tarball cache
    written: list[str] = field(default_factory=list)  #: files (relative to static/) written
    unchanged: int = 0  #: files found intact

    @property
    def up_to_date(self) -> bool:
        return not self.downloaded and not self.from_cache and not self.written


def read_manifest(static_dir: Path) -> dict:
    try:
        return json.loads((static_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def _intact(static_dir: Path, manifest: dict, pkg: NpmPackage) -> int | None:
    """How many files of ``pkg`` the manifest records, when all are present with their recorded SHA-256 and the
    package is pinned as recorded (None otherwise: reinstall the package)."""
    rec = manifest.get("packages", {}).get(pkg.name)
    if not rec or rec.get("version") != pkg.version or rec.get("integrity") != pkg.integrity:
        return None
    files = {d: f for d, f in manifest.get("files", {}).items() if f.get("package") == pkg.spec}
    if not files or any(d not in files for _, d in pkg.files):
        return None
    for dest, info in files.items():
        path = static_dir / dest
        if not path.is_file() or path.stat().st_size != info.get("size") or _sha256(path) != info.get("sha256"):
            return None
    return len(files)


def _tarball(pkg: NpmPackage, registry: str, cache_dir: Path, report: Report, log: Callable[[str], None]) -> bytes:
    cached = cache_dir / f"{pkg.name.replace('/', '__')}-{pkg.version}.tgz"
    if cached.is_file():
        data = cached.read_bytes()
        try:
            _check_integrity(data, pkg.integrity, f"cached {cached}")
            report.from_cache.append(pkg.spec)
            return data
        except AssetError:
            cached.unlink()  # a corrupt cache entry is fetched again
    from kdvision.core.data.download import download_file

    url = pkg.tarball_url(registry)
    log(f"downloading {pkg.spec} from {url}")
    part = cache_dir / f".{cached.name}.download"
    try:
        download_file(url, part, progress=False, resume=False)
    except DataError as exc:
        raise DataError(f"{pkg.spec}: {exc} (is the npm registry {registry} reachable? --registry URL names a "
                        f"mirror)") from None
    data = part.read_bytes()
    try:
        _check_integrity(data, pkg.integrity, f"{pkg.spec} from {url}")
    except AssetError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, cached)
    report.downloaded.append(pkg.spec)
    return data


def _members(data: bytes) -> dict[str, bytes]:
    """The tarball's regular files by path relative to its top folder (npm's ``package/``), with their bytes."""
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for m in tar:
            if not m.isfile():
                continue
            parts = m.name.lstrip("./").split("/", 1)
            if len(parts) != 2 or ".." in parts[1].split("/"):
                continue
            fh = tar.extractfile(m)
            if fh is not None:
                out[parts[1]] = fh.read()
    return out


def install(static_dir: str | Path | None = None, *, registry: str | None = None, cache_dir: str | Path | None = None,
            packages: Iterable[NpmPackage] = PACKAGES, check_visdom: bool = True, force: bool = False,
            log: Callable[[str], None] = print) -> Report:
    """Install ``packages`` into ``static_dir`` (default: the installed Visdom's ``static/``); see the module doc.

    ``check_visdom``: first check that the packages provide every file the installed Visdom expects, and write its
    ``version.built`` at the end.
    """
    packages = list(packages)
    vdir = visdom_dir() if check_visdom else None
    static = Path(static_dir) if static_dir is not None else default_static_dir()
    registry = (registry or default_registry()).rstrip("/")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if check_visdom:
        missing = uncovered(expected_files(vdir), packages)
        if missing:
            raise AssetError(f"visdom {visdom_version(vdir)} expects files this installer does not provide: "
                             + ", ".join(missing))
    report = Report(static)
    manifest = read_manifest(static)
    files: dict[str, dict] = dict(manifest.get("files", {}))
    pkgs: dict[str, dict] = dict(manifest.get("packages", {}))
    for pkg in packages:
        n = None if force else _intact(static, manifest, pkg)
        if n is not None:
            report.unchanged += n
            continue
        cache.mkdir(parents=True, exist_ok=True)
        members = _members(_tarball(pkg, registry, cache, report, log))
        targets = pkg.targets(members)
        absent = sorted(src for dest, src in targets.items() if src not in members)
        if absent or not targets:
            raise AssetError(f"{pkg.spec}: the tarball lacks {', '.join(absent) or 'every file it should provide'}")
        files = {d: f for d, f in files.items() if f.get("package", "").rsplit("@", 1)[0] != pkg.name}
        for dest, src in sorted(targets.items()):
            data = members[src]
            path = static / dest
            if not (path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data):
                _write_atomic(path, data)
                report.written.append(dest)
            else:
                report.unchanged += 1
            files[dest] = {"package": pkg.spec, "source": src, "size": len(data),
                           "sha256": hashlib.sha256(data).hexdigest()}
        pkgs[pkg.name] = {"version": pkg.version, "integrity": pkg.integrity, "tarball": pkg.tarball_url(registry)}
    if not report.up_to_date or not (static / MANIFEST).is_file():
        doc = {"generator": "kdvision tools/visdom_assets.py", "visdom": visdom_version(vdir) if vdir else None,
               "packages": dict(sorted(pkgs.items())), "files": dict(sorted(files.items()))}
        _write_atomic(static / MANIFEST, (json.dumps(doc, indent=1) + "\n").encode())
    if check_visdom:
        still = [f for f in expected_files(vdir) if not (static / f).is_file()]
        if still:
            raise AssetError(f"after installing, files Visdom expects are still missing: {', '.join(still)}")
        version = visdom_version(vdir)
        built = static / "version.built"
        if not built.is_file() or built.read_text().strip() != version:
            _write_atomic(built, version.encode())
    return report


def missing_assets(static_dir: str | Path | None = None) -> list[str]:
    """Files the installed Visdom expects that are not in ``static_dir`` (empty: the server works offline)."""
    static = Path(static_dir) if static_dir is not None else default_static_dir()
    out = [f for f in expected_files() if not (static / f).is_file()]
    built = static / "version.built"
    if not built.is_file() or built.read_text().strip() != visdom_version():
        out.append("version.built")
    return out


# ---------------------------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    from kdvision.core.engine.cli import ArgumentParser

    p = ArgumentParser(prog="visdom_assets.py", description=__doc__, argument_default=None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--static-dir", "--static_dir", dest="static_dir", metavar="DIR",
                   help="Visdom's static folder (default: the installed visdom package's static/)")
    p.add_argument("--registry", metavar="URL",
                   help=f"npm registry (default: $npm_config_registry, else {DEFAULT_REGISTRY})")
    p.add_argument("--cache-dir", "--cache_dir", dest="cache_dir", metavar="DIR",
                   help="tarball cache (default: ~/.cache/kdvision/npm)")
    p.add_argument("--force", action="store_true", help="fetch and write every package again")
    p.add_argument("--check", action="store_true",
                   help="only check: exit 1 listing the missing files when the server would need the internet")
    p.add_argument("--list", action="store_true", help="list the pinned packages and exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    return p


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        for pkg in PACKAGES:
            print(f"{pkg.spec:<28} {pkg.integrity}")
        return 0
    if args.check:
        missing = missing_assets(args.static_dir)
        if missing:
            print(f"missing {len(missing)} Visdom assets (run `make visdom-assets`): {', '.join(missing[:10])}"
                  + (" ..." if len(missing) > 10 else ""), file=sys.stderr)
            return 1
        print(f"all Visdom assets present in {args.static_dir or default_static_dir()}")
        return 0
    report = install(args.static_dir, registry=args.registry, cache_dir=args.cache_dir, force=args.force,
                     log=lambda msg: print(msg, flush=True))
    if report.up_to_date:
        print(f"Visdom assets up to date in {report.static_dir} ({report.unchanged} files checked)")
    else:
        print(f"Visdom assets installed in {report.static_dir}: {len(report.written)} files written, "
              f"{report.unchanged} unchanged; {len(report.downloaded)} packages downloaded, "
              f"{len(report.from_cache)} from the cache")
    return 0


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``tools/visdom_assets.py`` (exits)."""
    from kdvision.core.engine.cli import run_cli

    run_cli(_main, argv)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
