"""``python -m kdvision.tools.visdom_server [visdom.server flags]``: Visdom's server without its CDN downloads.

What ``python -m visdom.server`` does, minus ``download_scripts`` (the dashboard checks the installed assets
itself, so the server never reaches for the network), and with one compatibility fix: visdom 0.2.4's page asks
tornado for ``static_url("../user/style.css")``, a path outside the static folder that tornado >= 6.6 refuses with
a 403 for the whole page; here such a path gets an unversioned URL, as tornado < 6.6 gave it (the browser then
loads ``/user/style.css`` from Visdom's user-settings handler).
"""
from __future__ import annotations


def _tolerate_paths_outside_static() -> None:
    from tornado.web import HTTPError, StaticFileHandler

    original = StaticFileHandler.get_version.__func__  # type: ignore[attr-defined]

    def get_version(cls, settings, path):  # noqa: ANN001
        try:
            return original(cls, settings, path)
        except HTTPError:
            return None

    StaticFileHandler.get_version = classmethod(get_version)  # type: ignore[method-assign]


def main() -> None:
    _tolerate_paths_outside_static()
    from visdom.server.run_server import main as run

    run()


if __name__ == "__main__":
    main()
