"""``python -m helpers study``: run a study definition, merge its shards, verify committed rows.

* ``study --spec full|quick|PATH --out DIR [--stage val|test] [--shard K/N] [--alpha-from DIR]
  [--parts a,b] [--dask local[:W]|ADDRESS] [--cache DIR | --no-cache]``
* ``study merge DIR... --out DIR``
* ``study verify --spec full --dir results/study [--n-test 16] [--n-val 8]``

Everything given is checked before any work: the options (one-line errors with the command line's
parser), the study definition (:func:`helpers.study.spec.load_spec`) and the ``--parts`` named.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from .run import DEFAULT_CACHE, parse_shard, run_stage, run_study
from .spec import STAGES, load_spec

Parser = type[argparse.ArgumentParser]
#: The command line's checks of an output folder (``(path, option)``) and of ``--device``: each raises on bad input.
FolderCheck = Callable[[str, str], Any]
DeviceCheck = Callable[[str | None], Any]


def _no_check(*args: Any) -> None:
    """The default check: none (the command line passes its own)."""


def positive(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value}")
    return value


def run_parser(cls: Parser = argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = cls(prog="python -m helpers study", description="Run a study definition (resumable).")
    p.add_argument("--spec", default="full", help="full, quick, or a TOML study definition")
    p.add_argument("--out", required=True, help="output folder (one Parquet file per part, PROVENANCE.json)")
    p.add_argument("--stage", choices=STAGES, help="run one stage (default: val, then test)")
    p.add_argument("--shard", help="K/N: the K-th of N contiguous slices of each part's photos")
    p.add_argument("--alpha-from", help="folder of the merged val stage (default: --out)")
    p.add_argument("--parts", help="comma-separated part names (default: every part of the stage)")
    p.add_argument("--dask", help="local[:W] (a LocalCluster of W one-thread workers) or a scheduler address")
    p.add_argument("--cache", default=str(DEFAULT_CACHE), help="per-batch cache folder (resume)")
    p.add_argument("--no-cache", action="store_true", help="recompute everything")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    return p


def merge_parser(cls: Parser = argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = cls(prog="python -m helpers study merge", description="Join shard outputs per part.")
    p.add_argument("folders", nargs="+", help="shard output folders (and merged ones)")
    p.add_argument("--out", required=True, help="folder of the merged parts")
    return p


def verify_parser(cls: Parser = argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = cls(prog="python -m helpers study verify",
            description="Recompute a seeded sample of committed rows and compare.")
    p.add_argument("--spec", default="full")
    p.add_argument("--dir", default="results/study")
    p.add_argument("--n-test", type=positive, default=16)
    p.add_argument("--n-val", type=positive, default=8)
    return p


def main(argv: Sequence[str], parser: Parser = argparse.ArgumentParser, folder: FolderCheck = _no_check,
         device: DeviceCheck = _no_check) -> int:
    """Dispatch ``merge`` / ``verify`` / a run; returns the exit status (1: verification failed).

    The command line passes its one-line-error ``parser`` class and its checks of a writable
    ``folder`` and of the ``device``, run before any work."""
    argv = list(argv)
    if argv[:1] == ["merge"]:
        from .merge import merge
        args = merge_parser(parser).parse_args(argv[1:])
        folder(args.out, "--out")
        names = merge(args.folders, args.out)
        print(f"merged {len(names)} part(s) into {args.out}: {', '.join(names)}")
        return 0
    if argv[:1] == ["verify"]:
        import pandas as pd

        from .verify import verify
        args = verify_parser(parser).parse_args(argv[1:])
        report = verify(args.spec, args.dir, args.n_test, args.n_val)
        with pd.option_context("display.width", 160):
            print(report.to_string(index=False))
        return 0 if report["passed"].all() else 1
    args = run_parser(parser).parse_args(argv)
    spec = load_spec(args.spec)
    parts = None if args.parts is None else [p.strip() for p in args.parts.split(",") if p.strip()]
    if parts == []:
        raise ValueError(f"--parts {args.parts!r}: no part named")
    spec.check_selection(parts, args.stage)
    if args.alpha_from is not None and not Path(args.alpha_from).is_dir():
        raise ValueError(f"--alpha-from {args.alpha_from}: no such folder (the merged val stage)")
    device(args.device)
    if args.shard and args.dask:
        raise ValueError("--dask makes its own shards; drop --shard")
    if args.shard and not args.stage:
        raise ValueError("--shard needs --stage (test shards need the merged val stage first)")
    shard = parse_shard(args.shard) if args.stage and not args.dask else None
    cache = None if args.no_cache else args.cache
    if cache is not None:
        folder(cache, "--cache")
    folder(args.out, "--out")                   # created only once every option has been checked
    if args.dask:
        from .distributed import run_dask
        run_dask(spec, args.out, args.dask, args.stage, parts, cache)
    elif args.stage:
        run_stage(spec, args.stage, args.out, shard, args.alpha_from, parts, cache, device=args.device)
    else:
        run_study(spec, args.out, alpha_from=args.alpha_from, parts=parts, cache=cache, device=args.device)
    print(f"study written to {args.out}", file=sys.stderr)
    return 0
