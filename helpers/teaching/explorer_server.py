"""The explorer's web server: Voilà, answering only its own address, one page, on one port.

``python -m helpers explore`` runs ``python -m helpers.teaching.explorer_server NOTEBOOK --port=P ...``
(:func:`helpers.teaching.explorer.voila_command`). Beyond Voilà's own settings, :class:`ExplorerVoila`:

- answers only requests whose ``Host`` is ``localhost``, ``127.0.0.1`` or ``[::1]`` with its port
  (403 otherwise, for every URL: a web site that rebinds its own name to 127.0.0.1 gets nothing);
- serves its page at ``/`` only, without query parameters, and refuses a page load that another web
  site started (``Sec-Fetch-Site: cross-site``), before any kernel starts; Voilà's 500s for
  malformed template paths become 404s;
- carries websocket messages up to ``websocket_max_message_size`` (an upload travels as one);

It imports nothing of this package, so the server starts without loading the model; the page's kernel does that.
"""
from __future__ import annotations

import posixpath

import tornado.web
from traitlets import Integer
from voila.app import Voila
from voila.static_file_handler import TemplateStaticFileHandler
from voila.tornado.handler import TornadoVoilaHandler

#: The host names the server answers to, each with its port.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")


class LocalHostOnly:
    """Mixed into every handler: a request whose ``Host`` is not one of :data:`LOCAL_HOSTS` with the
    server's port gets 403 before the handler runs."""

    def prepare(self):  # noqa: ANN201 (tornado's prepare may return an awaitable)
        if self.request.host.lower() not in self.settings["explorer_hosts"]:
            self.current_user = self._jupyter_current_user = None  # as jupyter_server's own Host check does
            raise tornado.web.HTTPError(403, f"Host {self.request.host!r} is not this server's address")
        return super().prepare()


class PageHandler(TornadoVoilaHandler):
    """The page at ``/``: another path gets 404, a query 400, a load started by another site 403,
    each before a kernel starts."""

    async def get(self, path: str | None = None) -> None:
        if path:
            raise tornado.web.HTTPError(404)
        if self.request.query:
            raise tornado.web.HTTPError(400, "the explorer page takes no query parameters")
        if self.request.headers.get("Sec-Fetch-Site") == "cross-site":
            raise tornado.web.HTTPError(403, "the explorer page was requested by another web site")
        await super().get()


class TemplateFiles(TemplateStaticFileHandler):
    """Voilà's template files at ``<template>/static/<file>``; any other path gets 404, not a 500."""

    def parse_url_path(self, url_path: str) -> str:
        parts = posixpath.normpath(url_path).split("/", 2)
        if len(parts) < 3 or parts[1] != "static" or url_path.startswith("/") or "\x00" in url_path:
            raise tornado.web.HTTPError(404)
        return super().parse_url_path(url_path)


#: Voilà's handler classes and the stricter ones that replace them.
REPLACED = {TornadoVoilaHandler: PageHandler, TemplateStaticFileHandler: TemplateFiles}


class ExplorerVoila(Voila):
    """Voilà with the checks above (each of Voilà's own settings still applies)."""

    websocket_max_message_size = Integer(10 * 2**20, config=True,
                                         help="largest websocket message in bytes (tornado's default: 10 MiB)")

    def init_settings(self) -> dict:
        """Voilà's settings, with the allowed Host values and the websocket message limit."""
        hosts = frozenset(f"{host}:{self.port}" for host in LOCAL_HOSTS)
        return {**super().init_settings(), "explorer_hosts": hosts,
                "websocket_max_message_size": self.websocket_max_message_size}

    def init_handlers(self) -> list:
        """Voilà's handlers, the page's and the template files' replaced, each behind the Host check."""
        return [(pattern, local_only(REPLACED.get(cls, cls)), *rest) for pattern, cls, *rest in super().init_handlers()]


def local_only(cls: type) -> type:
    """``cls`` behind :class:`LocalHostOnly`."""
    return type(cls.__name__, (LocalHostOnly, cls), {})


if __name__ == "__main__":
    ExplorerVoila.launch_instance()
