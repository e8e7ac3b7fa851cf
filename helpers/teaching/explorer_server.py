"""The explorer's web server: Voilà restricted to the one page it serves (``python -m helpers explore``).

Voilà turns off jupyter_server's Host check and routes every path to the notebook. :class:`ExplorerVoila`
puts :func:`refusal` in front of every handler (pages, static files, websockets):

- a Host other than ``localhost``, ``127.0.0.1`` or ``[::1]`` (any port), or ``Sec-Fetch-Site: cross-site``,
  gets 403 (DNS rebinding: a web page in the user's browser cannot drive the server);
- only ``/`` (the page, without a query string: 400 otherwise), the static, theme and extension files, the
  page's kernel API and websocket are served, each path made of plain name characters; anything else is 404;
- at most :data:`MAX_KERNELS` pages (kernels) at once: another ``/`` gets 503 instead of a kernel.

Websocket messages up to :data:`WEBSOCKET_LIMIT` arrive (uploads up to
:data:`helpers.teaching.interactive.UPLOAD_LIMIT` fit). Run as ``python -m helpers.teaching.explorer_server``
with Voilà's arguments (:func:`helpers.teaching.explorer.voila_command`).
"""
from __future__ import annotations

import re
import tempfile
from typing import Any

import tornado.web
from tornado.httputil import HTTPServerRequest
from traitlets import Integer
from voila.app import Voila

#: Host headers served: loopback names only, with or without a port.
ALLOWED_HOST = re.compile(r"(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?", re.IGNORECASE)
_KERNEL = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_FILE = r"(/[A-Za-z0-9_@~+=-][A-Za-z0-9_.@~+=-]*)+"  # no "%", no control characters, no ".."
#: The paths the page needs: itself, Voilà's static files, the lab template's, themes, front-end extensions,
#: its kernel (REST, websocket, shutdown on leaving).
SERVED = re.compile(rf"/|/voila/(static|labextensions|api/themes){_FILE}|/voila/templates/lab/static{_FILE}"
                    rf"|/api/kernels/{_KERNEL}(/channels)?|/voila/api/shutdown/{_KERNEL}")
#: Pages (each one kernel, ~1.5 GB) served at once.
MAX_KERNELS = 4
#: The largest websocket message accepted (tornado's default is 10 MiB).
WEBSOCKET_LIMIT = 64 * 2**20


def refusal(request: HTTPServerRequest, open_kernels: int, max_kernels: int = MAX_KERNELS) -> int | None:
    """The HTTP status refusing ``request`` before any handler runs (403, 404, 400 or 503), or None to serve it.

    ``open_kernels``: how many pages are open (a new page starts one more kernel)."""
    if not ALLOWED_HOST.fullmatch(request.host) or request.headers.get("Sec-Fetch-Site") == "cross-site":
        return 403
    if not SERVED.fullmatch(request.path):
        return 404
    if request.path == "/" and "?" in request.uri:
        return 400
    if request.path == "/" and open_kernels >= max_kernels:
        return 503
    return None


class GuardedApplication(tornado.web.Application):
    """A tornado application that answers :func:`refusal`'s status instead of routing a refused request."""

    def find_handler(self, request: HTTPServerRequest, **kwargs: Any) -> tornado.web._HandlerDelegate:
        """The refusal's error handler, else the usual route."""
        status = refusal(request, len(self.settings["kernel_manager"].list_kernel_ids()),
                         self.settings["max_kernels"])
        if status is not None:
            return self.get_handler_delegate(request, tornado.web.ErrorHandler, {"status_code": status})
        return super().find_handler(request, **kwargs)


class ExplorerVoila(Voila):
    """Voilà serving its notebook through a :class:`GuardedApplication`, websocket messages up to
    :data:`WEBSOCKET_LIMIT`."""

    max_kernels = Integer(MAX_KERNELS, config=True, help="pages (kernels) served at once")

    def start(self) -> None:
        """Voilà's ``start`` with the guarded application."""
        self.connection_dir = tempfile.mkdtemp(prefix="voila_", dir=self.connection_dir_root)
        self.app = GuardedApplication(**self.init_settings())
        self.app.settings.update(self.tornado_settings, websocket_max_message_size=WEBSOCKET_LIMIT,
                                 max_kernels=self.max_kernels)
        self.app.add_handlers(".*$", self.init_handlers())
        self.listen()


if __name__ == "__main__":
    ExplorerVoila.launch_instance()
