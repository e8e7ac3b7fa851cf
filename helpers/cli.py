"""The command line: ``python -m helpers explain|evaluate|merge`` (also installed as ``xai-cam``).

``explain`` writes, per image and method, an overlay PNG and the map (.npy), plus one JSON per
image with the prediction, the settings and the model's provenance. ``evaluate`` imports an image
folder (:func:`helpers.data.folders.import_folder`) and runs it as a study of one part
(:mod:`helpers.study.folder`: the study's rows, per-photo cache, provenance), then writes the CSVs and
the study's REPORT.md; ``--shard K/N`` computes the K-th of N contiguous slices of the sorted image
list as a study shard, and ``merge`` joins the shards (:mod:`helpers.study.merge`) into the report a
single run gives.

Exit status: 0 done; 2 bad input (a missing file, an unknown model/layer/class, a bad option, an
unwritable ``--out``), said in one line ``error: ...`` before any model loads where it can be
checked then; 1 the run could not finish (a full disk, every image failed, the report failed),
said in one line, with what was kept; 130 interrupted (Ctrl-C), with what is kept and how to resume.
Every output file is written to a temporary file beside it and renamed (never half written).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Callable, NoReturn, Sequence

import numpy as np
import torch

from .cam.bundle import ModelBundle
from .cam.inference import predict_topk
from .cam.models import load_model
from .config import SEED, write_atomic
from .evaluation.road_runner import EXTRA_METRICS
from .teaching.explorer import add_explore_args, run_explore

#: Accepted ``--steps`` (insertion/deletion steps): at least 2 points per curve; more than 1000
#: costs over 1000 forwards per image and method and is refused as a typo.
STEPS_RANGE: tuple[int, int] = (2, 1000)


class UserError(Exception):
    """Bad input: reported as one line, exit status 2."""


class RunError(Exception):
    """A run that could not finish (full disk, nothing evaluated, the report failed): one line, status 1."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors in one line (``error: ...``), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="efficientnet_lite0",
                   help="efficientnet_lite0/1/2, a torchvision name (resnet50, vit_b_16, ...), timm/<name>, or auto")
    p.add_argument("--weights", help="a local weight file for the model")
    p.add_argument("--download", action="store_true", help="let torchvision/timm download missing weights")
    p.add_argument("--layer", help="CAM layer (default: the last spatial map, printed)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--methods", default="gradcam,layercam,hybrid", help="comma-separated CAM methods")
    p.add_argument("--alpha", type=float, default=0.7, help="the hybrid's Grad-CAM exponent a, in [0, 1]")


def parser() -> argparse.ArgumentParser:
    """The argument parser of all sub-commands."""
    top = OneLineParser(prog="python -m helpers", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("explain", help="CAM overlays, maps and a JSON for images",
                        description="Overlay PNG and map (.npy) per image and method, and a JSON per image.")
    ex.add_argument("images", nargs="+", help="image files")
    _model_args(ex)
    ex.add_argument("--class", dest="class_", help="class to explain: index or name, any case, _ for spaces "
                                                   "(default: the prediction)")
    ex.add_argument("--score", choices=("logit", "probability"), default="logit", help="the class score explained")
    ex.add_argument("--out", default="explanations", help="output folder")
    ev = sub.add_parser("evaluate", help="faithfulness/localisation evaluation of an image folder",
                        description="Import an image folder, evaluate the methods, write CSVs and REPORT.md. "
                                    "Grad-CAM, LayerCAM, the hybrid (at --alpha and 0.7) and the random/Gaussian "
                                    "floors are always included: the report compares them.")
    ev.add_argument("--images", required=True, help="folder of class subfolders, or of files named in --labels")
    ev.add_argument("--labels", help="CSV with columns file,label[,split] (files relative to --images)")
    ev.add_argument("--allow-outside", action="store_true",
                    help="accept --labels files outside --images (../x.jpg, absolute paths)")
    ev.add_argument("--boxes", help="folder of Pascal VOC XML boxes (<image stem>.xml)")
    ev.add_argument("--synsets", help="WordNet id list, one per class index (wnid labels and boxes need none for "
                    "the 1000 ImageNet classes, which are known offline)")
    _model_args(ev)
    ev.add_argument("--out", default="evaluation", help="output folder")
    ev.add_argument("--shard", help="K/N: evaluate only the K-th of N parts; combine with `merge`")
    ev.add_argument("--steps", type=int, help=f"insertion/deletion steps, {STEPS_RANGE[0]}..{STEPS_RANGE[1]} "
                                              "(default: the protocol's)")
    ev.add_argument("--metrics", nargs="+", default=[], choices=EXTRA_METRICS, help="extra metrics: road (ROAD, "
                    "Rong et al. 2022: MoRF/LeRF, noisy linear imputation, ~1 s per image x method; road_* columns)")
    ev.add_argument("--maps", action="append", default=[], metavar="NAME=PATH", help="maps computed elsewhere, "
                    "evaluated as method NAME: a .npz keyed by file name relative to --images, or a folder of .npy")
    ev.add_argument("--no-timing", action="store_true", help="skip timings (then reruns give identical files)")
    ev.add_argument("--cache", help="per-image result cache (default: OUT/.cache); shards may share one")
    mg = sub.add_parser("merge", help="combine `evaluate --shard` outputs into one report",
                        description="Combine the outputs of `evaluate --shard K/N` (K = 1..N) into one report.")
    mg.add_argument("shards", nargs="+", help="the shards' output folders")
    mg.add_argument("--out", default="evaluation", help="output folder")
    st = sub.add_parser("study", add_help=False, help="run, merge or verify the study (python -m helpers study -h)")
    st.add_argument("rest", nargs=argparse.REMAINDER)
    add_explore_args(sub.add_parser("explore", help="the explorer as a web page on 127.0.0.1"))
    return top


def _bundle(args: argparse.Namespace) -> ModelBundle:
    return load_model(args.model, weights=args.weights, device=args.device, download=args.download, layer=args.layer)


def _methods(text: str) -> list[str]:
    """``--methods``: known names, each once, at least one."""
    from .cam.engine import _resolve
    names = list(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    if not names:
        raise UserError(f"--methods {text!r}: no method named")
    for name in names:
        _resolve(name)
    return names


def _alpha(value: float) -> float:
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise UserError(f"--alpha {value}: must lie in [0, 1]")
    return value


def _device(text: str | None) -> str | None:
    """``--device``: a device torch knows and this machine has."""
    if text is None:
        return None
    try:
        device = torch.device(text)
    except RuntimeError as err:
        raise UserError(f"--device {text!r}: {_one_line(err)}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {text}: CUDA is not available on this machine (use cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return text


def class_index(value: str, names: Sequence[str]) -> int:
    """``--class``: an index, a name or a WordNet id, by the labels CSV's rule
    (:func:`helpers.data.folders.class_index`); a UserError otherwise."""
    from .data.folders import class_index as rule
    try:
        return rule(value, names)
    except ValueError as err:
        raise UserError(str(err)) from None


def writable_folder(path: str | Path, option: str = "--out") -> Path:
    """Create the folder ``path`` if needed and check that files can be written in it; a UserError
    naming it when it is a file, lies under a file or is not writable."""
    path = Path(path)
    above = next((p for p in (path, *path.parents) if p.exists()), None)
    if above is not None and not above.is_dir():
        raise UserError(f"{option} {path}: {'it' if above == path else above} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise UserError(f"{option} {path}: cannot write there ({err.strerror})") from None
    return path


def provenance(bundle: ModelBundle) -> dict:
    """What identifies the model of a result."""
    import torchvision
    return {"name": bundle.name, "weights": bundle.weights_source, "pretrained": bundle.pretrained,
            "input_size": bundle.input_size, "mean": list(bundle.mean), "std": list(bundle.std),
            "torch": torch.__version__, "torchvision": torchvision.__version__}


def output_stems(paths: Sequence[Path]) -> dict[Path, str]:
    """Output name stem per image: its file stem, plus ``-`` and 8 hex digits of its path where
    images share a stem, in any case (``a/bird.jpg``, ``b/bird.jpg``, ``Bird.png``), so no output overwrites another."""
    stems = [p.stem.lower() for p in paths]   # Bird.jpg and bird.png clash on case-insensitive disks
    return {p: p.stem if stems.count(p.stem.lower()) == 1 else
            f"{p.stem}-{hashlib.sha256(str(p.resolve()).encode()).hexdigest()[:8]}" for p in paths}


def run_explain(args: argparse.Namespace) -> None:
    """The ``explain`` sub-command."""
    from PIL import Image

    from .cam.engine import class_target, compute_cams, method_options
    from .config import progress_bar
    from .data.images import load_images
    from .teaching.viz import overlay

    methods, alpha, _ = _methods(args.methods), _alpha(args.alpha), _device(args.device)
    # every file is read before the model loads; one that cannot be (missing, a symlink loop, not an image) is
    # named on one line and skipped, as `evaluate` does; none readable is bad input
    loaded, rejected = load_images(args.images)
    if not loaded:
        raise UserError(rejected[0] if len(rejected) == 1 else
                        f"none of the {len(rejected)} images can be read (first: {rejected[0]})")
    for reason in rejected:
        print(f"skipped {reason}", file=sys.stderr)
    unique: dict[Path, Path] = {}
    for p in loaded:   # a file named twice (a/x.jpg, ./a/../a/x.jpg) is explained once
        unique.setdefault(p.resolve(), p)
    paths = list(unique.values())
    images = {p: loaded[p] for p in paths}
    out = writable_folder(args.out)
    stems = output_stems(paths)
    written: list[str] = []
    args.kept = lambda: f"{len(written)} whole files written to {out}; run the same command again to redo the rest"
    bundle = _bundle(args)
    target = None if args.class_ is None else class_index(args.class_, bundle.class_names)

    def save(name: str, write: Callable[[io.BytesIO], object]) -> None:
        blob = io.BytesIO()
        write(blob)   # in memory first: a short write to disk then fails with the system's own reason
        write_atomic(out / name, blob.getvalue())
        written.append(name)

    for path, image in progress_bar(images.items(), desc="explaining", disable=len(images) < 2):
        x = bundle.preprocess(image)[None]
        maps = compute_cams(bundle, x, [method_options(m, {"alpha": args.alpha}) for m in methods],
                            class_target(target, args.score), layer=args.layer)
        top = predict_topk(bundle, x, k=5)[0]
        explained = int(maps.class_idx[0])
        for method, m in maps.items():
            save(f"{stems[path]}_{method}.npy", lambda fh, m=m: np.save(fh, m[0].cpu().numpy().astype(np.float32)))
            rgb = overlay(x[0], m[0], mean=bundle.mean, std=bundle.std)
            save(f"{stems[path]}_{method}.png",
                 lambda fh, rgb=rgb: Image.fromarray((rgb * 255).round().astype(np.uint8)).save(fh, format="PNG"))
        record = {"image": str(path), "prediction": [{"class_idx": i, "class_name": n, "probability": round(p, 6)}
                                                     for i, n, p in top],
                  "explained_class": {"class_idx": explained, "class_name": bundle.class_names[explained]},
                  "settings": {"methods": methods, "alpha": alpha, "layer": args.layer or bundle.target_layer,
                               "score": "logit", "maps": "[0, 1], bilinearly upsampled to the model input"},
                  "model": provenance(bundle),
                  "files": {m: [f"{stems[path]}_{m}.png", f"{stems[path]}_{m}.npy"] for m in methods}}
        save(f"{stems[path]}.json", lambda fh, record=record: fh.write((json.dumps(record, indent=2) + "\n").encode()))
    maps_written = sum(name.endswith(".npy") for name in written)
    print(f"wrote {maps_written} overlays and maps, {len(written) - 2 * maps_written} JSON files to {out}"
          + (f"; skipped {len(rejected)} unreadable file(s)" if rejected else ""))


def check_evaluate_inputs(args: argparse.Namespace) -> tuple[int, int, list]:
    """Every ``evaluate`` input that can be checked before the model loads: ``(K, N, method specs)``."""
    from .data.folders import read_labels, read_synsets
    from .study.run import parse_shard
    if not Path(args.images).is_dir():
        raise UserError(f"{args.images}: no such image folder")
    if args.boxes is not None and not Path(args.boxes).is_dir():
        raise UserError(f"--boxes {args.boxes}: no such folder")
    if args.labels is not None:
        read_labels(args.labels)   # a folder, a missing file, an unreadable encoding: named now
    if args.synsets is not None:
        read_synsets(args.synsets)
    if args.steps is not None and not STEPS_RANGE[0] <= args.steps <= STEPS_RANGE[1]:
        raise UserError(f"--steps {args.steps}: must lie in {STEPS_RANGE[0]}..{STEPS_RANGE[1]}")
    k, n = parse_shard(args.shard)
    _device(args.device)
    from .data.map_sources import parse_maps_option
    from .evaluation.runner import default_specs
    from .study.folder import method_specs
    specs = default_specs(_alpha(args.alpha), _methods(args.methods)) + [parse_maps_option(t) for t in args.maps]
    return k, n, method_specs(specs, "road" in args.metrics)


def run_evaluate(args: argparse.Namespace) -> None:
    """The ``evaluate`` sub-command: a study of one part (``main``, and ``road`` with ``--metrics road``) over
    the imported folder, run, sharded and merged as the study's parts are (:mod:`helpers.study.folder`)."""
    from .data.folders import import_folder
    from .study.folder import failures, folder_photos, folder_spec, run_folder
    from .study.run import PartRun

    k, n, specs = check_evaluate_inputs(args)
    root, out = Path(args.images), writable_folder(args.out)
    cache = writable_folder(args.cache if args.cache else out / ".cache", "--cache")
    args.kept = lambda: f"the finished images are kept in the cache {cache}; run the same command again to resume"
    bundle = _bundle(args)
    df = import_folder(root, labels_csv=args.labels, boxes_dir=args.boxes, synsets=args.synsets,
                       out=out / "manifest.csv", relative_to=root, allow_outside=args.allow_outside)
    if df.empty:
        raise UserError(f"{root}: no readable, labelled images")
    if n > len(df):
        raise UserError(f"--shard {k}/{n}: only {len(df)} images, so N must be at most {len(df)}")
    spec = folder_spec(specs, bundle.name, args.steps, "road" in args.metrics, not args.no_timing)
    run = PartRun((k, n), cache=cache, photos=folder_photos(out / "manifest.csv", root), alpha=args.alpha,
                  skip_failures=True)
    parts = run_folder(spec, bundle, out, run)
    failed, evaluated = failures(parts), len(parts["main"].facts["photos"])
    if parts["main"].rows.empty:
        first = f"{failed[0][0]}: {' '.join(failed[0][1].split())}" if failed else "none loaded"
        raise RunError(f"every one of the {evaluated} images failed, nothing to report (first: {first})")
    if n > 1:
        print(f"shard {k}/{n}: {evaluated} images evaluated into {out}; combine with `merge`")
        return
    written = write_report(parts, out)
    print(f"wrote {', '.join(written)}, the figures and REPORT.md to {out} ({evaluated} images, "
          f"{len(failed)} failed)")


def write_report(parts: dict, out: Path) -> list[str]:
    """The CSVs (measured tables first), the figures and REPORT.md of a folder's parts; a RunError saying what
    was kept if it fails. Returns the CSVs' names."""
    from .report.render import write_report as write_study_report
    from .study import folder
    written = folder.write_tables(parts, out)
    try:
        written.append(folder.write_summary(parts, out))
        write_study_report(folder.study_of(out, parts), out, folder.failure_lines(parts))
    except OSError:
        raise
    except Exception as err:   # a bug in the statistics must not hide the measured results
        raise RunError(f"the report failed ({type(err).__name__}: {_one_line(err)}); kept in {out}: "
                       f"{', '.join(written)}") from err
    return written + ["leaderboard.csv", "confirmatory_tests.csv"]


def run_merge(args: argparse.Namespace) -> None:
    """The ``merge`` sub-command: the study's merge of ``evaluate --shard`` folders, then the report."""
    from .study.merge import merge
    from .study.store import read_folder

    for folder in map(Path, args.shards):
        if (folder / "shard.json").is_file():
            raise UserError(f"shard {folder}: written by an older version of helpers: re-run `python -m helpers "
                            "evaluate --shard K/N` into it with this one")
    out = writable_folder(args.out)
    args.kept = lambda: "the shard folders are unchanged; run the same command again"
    names = merge(args.shards, out)
    parts = read_folder(out)
    if "main" not in names:
        raise UserError(f"{', '.join(map(str, args.shards))}: no `evaluate` shard (main.parquet) to merge")
    write_report({n: parts[n] for n in names}, out)
    print(f"merged {len(args.shards)} shards into {out}")


def run_study(args: argparse.Namespace) -> int:
    """The ``study`` sub-command (:mod:`helpers.study.cli`; ``study report``: :mod:`helpers.report.regenerate`)."""
    from .study.cli import main as study_main
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    if rest[:1] == ["report"]:
        from .report.regenerate import command
        return command(rest[1:], parser=OneLineParser, folder=writable_folder)
    args.kept = lambda: ("finished part files and every finished batch (the study cache) are kept; run the same "
                         "command again to resume")
    return study_main(rest, parser=OneLineParser, folder=writable_folder, device=_device)


COMMANDS = {"explain": run_explain, "evaluate": run_evaluate, "merge": run_merge, "study": run_study,
            "explore": run_explore}


def _one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return f"{err.filename}: {err.strerror}" if err.filename else err.strerror
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0, 1, 2 or 130, see the module docstring)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["study"]:  # its own parsers (sub-sub-commands merge / verify)
        argv = [argv[0], "--", *argv[1:]]
    args = parser().parse_args(argv)
    torch.manual_seed(SEED)
    args.kept = lambda: "nothing was written"
    try:
        status = COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"interrupted: {args.kept()}", file=sys.stderr)
        return 130
    except (UserError, ValueError, FileNotFoundError) as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except RunError as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 1
    except OSError as err:   # a full or read-only disk while writing
        print(f"error: {_one_line(err)}; {args.kept()}", file=sys.stderr)
        return 1
    return status or 0
