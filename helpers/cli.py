"""The command line: ``python -m helpers explain|evaluate|merge`` (also installed as ``xai-cam``).

``explain`` writes, per image and method, an overlay PNG and the map (.npy), plus one JSON per
image with the prediction, the settings and the model's provenance. ``evaluate`` imports an image
folder (:func:`helpers.data.images.import_folder`), runs the cached evaluation
(:func:`helpers.evaluation.runner.evaluate`) and writes the CSVs and REPORT.md
(:func:`helpers.evaluation.report.write_all`); ``--shard K/N`` evaluates the K-th of N contiguous
parts of the sorted image list, and ``merge`` joins the parts into the report a single run gives.
Bad input (missing file, unknown model/layer/class) exits with status 2 and one line naming it.
"""
from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .cam.models import ModelBundle, load_model, predict_topk
from .config import SEED
from .teaching.explorer import add_explore_args, run_explore

SHARD_FILE = "shard.pkl"


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="efficientnet_lite0",
                   help="efficientnet_lite0/1/2, a torchvision name (resnet50, vit_b_16, ...), timm/<name>, or auto")
    p.add_argument("--weights", help="a local weight file for the model")
    p.add_argument("--download", action="store_true", help="let torchvision/timm download missing weights")
    p.add_argument("--layer", help="CAM layer (default: the last spatial map, printed)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--methods", default="gradcam,layercam,hybrid", help="comma-separated CAM methods")
    p.add_argument("--alpha", type=float, default=0.7, help="the hybrid's Grad-CAM exponent a")


def parser() -> argparse.ArgumentParser:
    """The argument parser of all sub-commands."""
    top = argparse.ArgumentParser(prog="python -m helpers", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("explain", help="CAM overlays, maps and a JSON for images",
                        description="Overlay PNG and map (.npy) per image and method, and a JSON per image.")
    ex.add_argument("images", nargs="+", help="image files")
    _model_args(ex)
    ex.add_argument("--class", dest="class_", help="class to explain: index or name (default: the prediction)")
    ex.add_argument("--score", choices=("logit", "probability"), default="logit", help="the class score explained")
    ex.add_argument("--out", default="explanations", help="output folder")
    ev = sub.add_parser("evaluate", help="faithfulness/localisation evaluation of an image folder",
                        description="Import an image folder, evaluate the methods, write CSVs and REPORT.md. "
                                    "Grad-CAM, LayerCAM, the hybrid (at --alpha and 0.7) and the random/Gaussian "
                                    "floors are always included: the report compares them.")
    ev.add_argument("--images", required=True, help="folder of class subfolders, or of files named in --labels")
    ev.add_argument("--labels", help="CSV with columns file,label[,split]")
    ev.add_argument("--boxes", help="folder of Pascal VOC XML boxes (<image stem>.xml)")
    ev.add_argument("--synsets", help="WordNet id list (for wnid labels or boxes)")
    _model_args(ev)
    ev.add_argument("--out", default="evaluation", help="output folder")
    ev.add_argument("--shard", help="K/N: evaluate only the K-th of N parts; combine with `merge`")
    ev.add_argument("--steps", type=int, help="insertion/deletion steps (default: the protocol's)")
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


class UserError(Exception):
    """Bad input: reported as one line, exit status 2."""


def _bundle(args: argparse.Namespace) -> ModelBundle:
    return load_model(args.model, weights=args.weights, device=args.device, download=args.download, layer=args.layer)


def _methods(text: str) -> list[str]:
    from .cam.engine import _resolve
    names = [m.strip() for m in text.split(",") if m.strip()]
    for name in names:
        _resolve(name)
    return names


def class_index(value: str, names: Sequence[str]) -> int:
    """A class given as an index or a (case-insensitive) name -> its index; a clear error otherwise."""
    if value.lstrip("-").isdigit():
        idx = int(value)
        if not 0 <= idx < len(names):
            raise UserError(f"class {idx} out of range: the model has {len(names)} classes (0..{len(names) - 1})")
        return idx
    lower = [n.lower() for n in names]
    if value.lower() not in lower:
        raise UserError(f"unknown class {value!r}: not one of the model's {len(names)} class names")
    return lower.index(value.lower())


def provenance(bundle: ModelBundle) -> dict:
    """What identifies the model of a result."""
    import torchvision
    return {"name": bundle.name, "weights": bundle.weights_source, "pretrained": bundle.pretrained,
            "input_size": bundle.input_size, "mean": list(bundle.mean), "std": list(bundle.std),
            "torch": torch.__version__, "torchvision": torchvision.__version__}


def run_explain(args: argparse.Namespace) -> None:
    """The ``explain`` sub-command."""
    from PIL import Image
    from tqdm.auto import tqdm

    from .cam.engine import class_target, compute_cams, method_options
    from .data.images import load_image
    from .teaching.viz import overlay

    methods = _methods(args.methods)
    images = {Path(p): load_image(p) for p in args.images}  # every file checked before the model loads
    bundle = _bundle(args)
    target = None if args.class_ is None else class_index(args.class_, bundle.class_names)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path, image in tqdm(images.items(), desc="explaining", disable=len(images) < 2):
        x = bundle.preprocess(image)[None]
        maps = compute_cams(bundle, x, [method_options(m, {"alpha": args.alpha}) for m in methods],
                            class_target(target, args.score), layer=args.layer)
        top = predict_topk(bundle, x, k=5)[0]
        explained = int(maps.class_idx[0])
        for method, m in maps.items():
            stem = f"{path.stem}_{method}"
            np.save(out / f"{stem}.npy", m[0].cpu().numpy().astype(np.float32))
            rgb = overlay(x[0], m[0], mean=bundle.mean, std=bundle.std)
            Image.fromarray((rgb * 255).round().astype(np.uint8)).save(out / f"{stem}.png")
        record = {"image": str(path), "prediction": [{"class_idx": i, "class_name": n, "probability": round(p, 6)}
                                                     for i, n, p in top],
                  "explained_class": {"class_idx": explained, "class_name": bundle.class_names[explained]},
                  "settings": {"methods": methods, "alpha": args.alpha, "layer": args.layer or bundle.target_layer,
                               "score": "logit", "maps": "[0, 1], bilinearly upsampled to the model input"},
                  "model": provenance(bundle),
                  "files": {m: [f"{path.stem}_{m}.png", f"{path.stem}_{m}.npy"] for m in methods}}
        (out / f"{path.stem}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {len(images) * len(methods)} overlays and maps, {len(images)} JSON files to {out}")


def eval_specs(methods: Sequence[str], alpha: float) -> list:
    """The evaluated methods: Grad-CAM, LayerCAM, the hybrid at ``alpha`` and 0.7, the others asked for, the floors."""
    from .evaluation.runner import FLOORS, THESIS_ALPHA, MethodSpec, as_spec
    specs = [MethodSpec("gradcam", "gradcam"), MethodSpec("layercam", "layercam"),
             as_spec(("hybrid@val", "hybrid", {"alpha": alpha})),
             as_spec((f"hybrid@{THESIS_ALPHA}", "hybrid", {"alpha": THESIS_ALPHA}))]
    specs += [MethodSpec(m, m) for m in methods if m not in ("gradcam", "layercam", "hybrid")]
    return specs + [MethodSpec(f, f) for f in FLOORS]


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 1 <= K <= N; None -> (1, 1)."""
    if text is None:
        return 1, 1
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: expected K/N, e.g. 2/4") from None
    if not 1 <= k <= n:
        raise UserError(f"--shard {text!r}: need 1 <= K <= N")
    return k, n


def shard_of(items: Sequence, k: int, n: int) -> list:
    """The K-th of N contiguous parts of ``items`` (sizes differ by at most one); parts 1..N in order are ``items``."""
    size = len(items)
    return list(items[(k - 1) * size // n: k * size // n])


def run_evaluate(args: argparse.Namespace) -> None:
    """The ``evaluate`` sub-command."""
    import dataclasses

    from .data.images import import_folder, load_samples
    from .evaluation import metrics as M
    from .evaluation.report import write_all
    from .evaluation.runner import EvalConfig, evaluate

    root = Path(args.images)
    if not root.is_dir():
        raise UserError(f"{root}: no such image folder")
    for option, value in (("--labels", args.labels), ("--boxes", args.boxes), ("--synsets", args.synsets)):
        if value is not None and not Path(value).exists():
            raise UserError(f"{option} {value}: no such file or folder")
    k, n = parse_shard(args.shard)
    specs = eval_specs(_methods(args.methods), args.alpha)
    bundle = _bundle(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.csv"
    df = import_folder(root, labels_csv=args.labels, boxes_dir=args.boxes, synsets=args.synsets, out=manifest)
    if df.empty:
        raise UserError(f"{root}: no readable, labelled images")
    samples = shard_of(sorted(load_samples(bundle, manifest=manifest), key=lambda s: s.file), k, n)
    cfg = EvalConfig()
    if args.steps is not None:
        cfg = dataclasses.replace(cfg, rise_steps=args.steps, thesis_steps=args.steps)
    cache = Path(args.cache) if args.cache else out / ".cache"
    ev = evaluate(bundle, samples, specs, cfg, cache_dir=cache, time_first=0 if args.no_timing else None)
    facts = {"model": f"{bundle.name} ({bundle.weights_source})", "CAM layer": args.layer or bundle.target_layer,
             "images": f"{root} ({len(df)} imported)", "rise protocol": f"{cfg.rise_steps} steps",
             "timings": "skipped" if args.no_timing else "median per image, batch 1"}
    if n > 1:
        with open(out / SHARD_FILE, "wb") as fh:
            pickle.dump({"shard": (k, n), "evaluation": ev, "alpha": args.alpha, "facts": facts}, fh)
        print(f"shard {k}/{n}: {len(samples)} images evaluated into {out}; combine with `merge`")
        return
    write_all(ev, out, args.alpha, facts)
    print(f"wrote the CSVs, comparison_plots.png and REPORT.md to {out} ({len(samples)} images, "
          f"{len(ev.failures)} failed; metrics: {', '.join(M.MODES)})")


def run_merge(args: argparse.Namespace) -> None:
    """The ``merge`` sub-command."""
    from .evaluation.report import write_all
    from .evaluation.runner import join_images

    shards = []
    for folder in args.shards:
        path = Path(folder) / SHARD_FILE
        if not path.is_file():
            raise UserError(f"{path}: not found (run `evaluate --shard K/N --out {folder}` first)")
        with open(path, "rb") as fh:
            shards.append(pickle.load(fh))
    shards.sort(key=lambda s: s["shard"][0])
    n = shards[0]["shard"][1]
    if sorted(s["shard"] for s in shards) != [(k, n) for k in range(1, n + 1)]:
        raise UserError(f"need shards 1..{n} of {n} exactly once, got {', '.join('%d/%d' % s['shard'] for s in shards)}")
    if any(s["facts"] != shards[0]["facts"] or s["alpha"] != shards[0]["alpha"] for s in shards):
        raise UserError("the shards differ in model, images or settings")
    write_all(join_images(*[s["evaluation"] for s in shards]), args.out, shards[0]["alpha"], shards[0]["facts"])
    print(f"merged {n} shards into {args.out}")


def run_study(args: argparse.Namespace) -> int:
    """The ``study`` sub-command (:mod:`helpers.study.cli`)."""
    from .study.cli import main as study_main
    return study_main(args.rest[1:] if args.rest[:1] == ["--"] else args.rest)


COMMANDS = {"explain": run_explain, "evaluate": run_evaluate, "merge": run_merge, "study": run_study,
            "explore": run_explore}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; bad input prints one line ``error: ...`` and returns 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["study"]:  # its own parsers (sub-sub-commands merge / verify)
        argv = [argv[0], "--", *argv[1:]]
    args = parser().parse_args(argv)
    torch.manual_seed(SEED)
    try:
        status = COMMANDS[args.command](args)
    except (UserError, FileNotFoundError, ValueError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    return status or 0
