"""The explorer as a local web page: its photos, its start a, the predicted a, and ``python -m helpers explore``.

The page is Voilà serving the small notebook ``explorer.ipynb`` next to this module, which shows
:func:`page_explorer`'s widget. Voilà is started on 127.0.0.1 only, with its kernel limited to the
widgets' messages (Voilà passes no ``execute_request`` from the page, so the page cannot run code),
without code cells, tracebacks, a file tree or file serving, behind the Host, path and kernel-count
checks of :mod:`helpers.teaching.explorer_server`; the kernels of pages left without a connection for
``--kernel-idle-timeout`` seconds are shut down (:func:`voila_command`).
"""
from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
from functools import partial
from pathlib import Path

from ..cam.bundle import ModelBundle
from ..cam.models import MODEL_NAMES, load_model
from ..cam.zoo import TIMM_PREFIX, torchvision_names
from ..config import IMAGENET_MANIFEST, ROOT
from ..data.imagenet import configured_root
from ..data.images import load_image
from ..data.photos import PHOTOS, network_disabled
from ..evaluation.policy import THESIS_ALPHA
from .interactive import HybridExplorer, PhotoLoader
from .study_view import STUDY_DIR, StudyAlphaPredictor

NOTEBOOK = Path(__file__).with_name("explorer.ipynb")
#: Seconds a kernel without a connected page may stay idle before it is shut down (``--kernel-idle-timeout``).
KERNEL_IDLE_TIMEOUT = 600
#: How the command hands the model name to the page's kernel.
MODEL_ENV = "XAI_EXPLORE_MODEL"
#: Front-end extensions installed beside Jupyter that the page does not load: Notebook 7's does not
#: match Voilà's JupyterLab version and raised JavaScript errors; the preview is JupyterLab's.
SKIPPED_EXTENSIONS = ("@jupyter-notebook/lab-extension", "@voila-dashboards/jupyterlab-preview")


def _packaged(loader: PhotoLoader) -> PhotoLoader:
    def load():
        with network_disabled():
            return loader()
    return load


def photo_sources(imagenet: str | Path | None = None) -> dict[str, PhotoLoader]:
    """The page's photos: the packaged ones, then the real ImageNet photos when their folder
    (:func:`helpers.data.imagenet.configured_root`, never downloaded here) and manifest are present."""
    sources = {f"{p.id} ({p.label_name})": _packaged(p.loader) for p in PHOTOS}
    folder = configured_root(imagenet)
    if folder.is_dir() and IMAGENET_MANIFEST.is_file():
        import pandas as pd
        table = pd.read_csv(IMAGENET_MANIFEST, usecols=["file", "split", "label_idx", "label_name"])
        sources |= {f"ImageNet {row.split}: {row.label_name} ({row.label_idx})": partial(load_image, folder / row.file)
                    for row in table.sort_values("label_name").itertuples()}
    return sources


def page_explorer(model: str | None = None, bundle: ModelBundle | None = None) -> HybridExplorer:
    """The page's explorer: every photo of :func:`photo_sources`, opening at the thesis' a
    (:data:`~helpers.evaluation.policy.THESIS_ALPHA`), the study's predicted a shown beside the slider.

    ``model`` defaults to ``$XAI_EXPLORE_MODEL``, else the embedded EfficientNet-Lite0; weights are
    never downloaded here."""
    bundle = bundle or load_model(model or os.environ.get(MODEL_ENV) or "efficientnet_lite0", download=False)
    return HybridExplorer(bundle, photos=photo_sources(), alpha=THESIS_ALPHA,
                          predict_alpha=StudyAlphaPredictor(STUDY_DIR, "full", bundle))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_port(port: int) -> None:
    """Raise ValueError (one line) unless ``port`` is in 1-65535 and free on 127.0.0.1 now."""
    if not 1 <= port <= 65535:
        raise ValueError(f"--port {port} is not a TCP port (1-65535)")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds it
        try:
            s.bind(("127.0.0.1", port))
        except OSError as err:
            why = "is in use" if err.errno == errno.EADDRINUSE else f"cannot be used ({err.strerror})"
            raise ValueError(f"port {port} on 127.0.0.1 {why}; choose another --port or leave it out") from None


def voila_command(port: int, open_browser: bool = False, idle_timeout: int = KERNEL_IDLE_TIMEOUT) -> list[str]:
    """The explorer's server (:mod:`helpers.teaching.explorer_server`) on :data:`NOTEBOOK` at exactly
    ``127.0.0.1:port`` (never another port): no tracebacks, no file serving, the kernels of pages without
    a connection shut down after ``idle_timeout`` idle seconds; it opens a browser once it listens when
    ``open_browser``."""
    return [sys.executable, "-m", "helpers.teaching.explorer_server", str(NOTEBOOK), f"--port={port}",
            "--Voila.port_retries=0", f"--Voila.open_browser={open_browser}", "--Voila.ip=127.0.0.1",
            "--VoilaConfiguration.show_tracebacks=False", "--VoilaConfiguration.file_denylist=.*",
            "--VoilaConfiguration.strip_sources=True", "--theme=light",
            f"--MappingKernelManager.cull_idle_timeout={idle_timeout}",
            f"--MappingKernelManager.cull_interval={max(1, min(60, idle_timeout // 2))}",
            *(f"--VoilaConfiguration.extension_denylist={e}" for e in SKIPPED_EXTENSIONS)]


def add_explore_args(p: argparse.ArgumentParser) -> None:
    """The ``explore`` sub-command's options."""
    p.add_argument("--port", type=int, help="port on 127.0.0.1, 1-65535 (default: a free one)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--model", default="efficientnet_lite0", help="the model to explain (see `explain --model`)")
    p.add_argument("--kernel-idle-timeout", type=int, default=KERNEL_IDLE_TIMEOUT, metavar="SECONDS",
                   help=f"shut down the kernel of a page left without a connection for this long "
                        f"(default {KERNEL_IDLE_TIMEOUT})")


def run_explore(args: argparse.Namespace) -> None:
    """Serve the explorer page until Ctrl-C: check the options (ValueError, one line), print its URL, then
    become the server (which opens a browser once it listens, unless ``--no-browser``)."""
    if not (args.model in ("auto", *MODEL_NAMES) or args.model.startswith(TIMM_PREFIX)
            or args.model in torchvision_names()):
        raise ValueError(f"unknown model {args.model!r}; use efficientnet_lite0/1/2, resnet50, auto, "
                         "a torchvision name or timm/<name>")
    if args.kernel_idle_timeout < 1:
        raise ValueError(f"--kernel-idle-timeout must be at least 1 second, got {args.kernel_idle_timeout}")
    port = free_port() if args.port is None else args.port
    check_port(port)
    url = f"http://127.0.0.1:{port}/"
    # the page's kernel imports this same package and explains this model
    env = os.environ | {MODEL_ENV: args.model,
                        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    print(f"explorer: {url}  (Ctrl-C stops it)", flush=True)
    # this process becomes the server
    os.execve(sys.executable, voila_command(port, not args.no_browser, args.kernel_idle_timeout), env)
