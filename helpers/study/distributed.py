"""Run a study's stages on a Dask cluster: each stage's shards as tasks, the merge in between.

``--dask local:W`` starts a :class:`dask.distributed.LocalCluster` of W worker processes of one
thread each; ``--dask ADDRESS`` uses a running scheduler (e.g. one started by
``dask_jobqueue.SLURMCluster`` on a cluster: the workers must see the same ``--out`` folder). The
plan is the same as the shell's: val shards, merge, test shards (alpha from the merged val), merge;
Dask only schedules it, so the rows equal a single process's.

A scheduler address is checked first (:func:`check_scheduler`): where nothing answers, or something
other than a Dask scheduler (a web server, the dashboard's port), the run stops within
:data:`CONNECT_TIMEOUT` seconds with one error naming the address, before any work.
"""
from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any, Sequence

import torch

from .merge import merge
from .run import DEFAULT_CACHE, run_stage
from .spec import STAGES, StudySpec, load_spec

#: Seconds a scheduler at ``--dask ADDRESS`` has to accept the connection and say it is a Dask scheduler.
CONNECT_TIMEOUT = 10.0


def parse_dask(text: str) -> tuple[str | None, int | None]:
    """``"local"`` / ``"local:W"`` -> (None, W); anything else is a scheduler address -> (address, None)."""
    if text == "local" or text.startswith("local:"):
        _, _, w = text.partition(":")
        try:
            workers = int(w) if w else 2
        except ValueError:
            raise ValueError(f"--dask {text!r}: expected local:W with W a number of workers") from None
        if workers < 1:
            raise ValueError(f"--dask {text!r}: need at least one worker")
        return None, workers
    return text, None


async def _identity(address: str, timeout: float) -> Any:
    """What the server at ``address`` says it is (Dask's ``identity`` call), every step bounded by ``timeout``."""
    from distributed.comm import connect

    comm = await asyncio.wait_for(connect(address, timeout=timeout), timeout)   # the handshake can hang too
    try:
        await asyncio.wait_for(comm.write({"op": "identity", "reply": True}), timeout)
        return await asyncio.wait_for(comm.read(), timeout)
    finally:
        comm.abort()


def check_scheduler(address: str, timeout: float | None = None) -> None:
    """A ValueError naming ``address`` unless a Dask scheduler answers there within ``timeout`` seconds
    (default :data:`CONNECT_TIMEOUT`): a closed port, a web server or a Dask worker fails fast."""
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    try:
        reply = asyncio.run(_identity(address, timeout))
    except Exception as err:   # refused, timed out, or bytes that are not Dask's (any decoding error)
        reason = "no answer" if isinstance(err, (TimeoutError, asyncio.TimeoutError)) else type(err).__name__
        raise ValueError(f"--dask {address}: no Dask scheduler answered within {timeout:g} s ({reason})") from None
    if not (isinstance(reply, dict) and reply.get("type") == "Scheduler"):
        kind = reply.get("type") if isinstance(reply, dict) else type(reply).__name__
        raise ValueError(f"--dask {address}: a {kind} answered, not a Dask scheduler")


def shard_task(spec: StudySpec, stage: str, out: str, shard: tuple[int, int], alpha_from: str,
               parts: Sequence[str] | None, cache: str | None, threads: int) -> str:
    """One shard of one stage in a worker with ``threads`` threads (a Dask task); returns its folder."""
    torch.set_num_threads(threads)
    run_stage(spec, stage, out, shard, alpha_from, parts, cache, progress=False)
    return out


def run_dask(spec: str | Path | StudySpec, out: str | Path, dask: str, stage: str | None = None,
             parts: Sequence[str] | None = None, cache: str | Path | None = DEFAULT_CACHE,
             threads_per_worker: int = 1) -> Path:
    """Run ``stage`` (default both, in order) of ``spec`` as W shards per stage on Dask; merged into ``out``."""
    from dask.distributed import Client, LocalCluster

    spec, out = load_spec(spec), Path(out)
    address, workers = parse_dask(dask)
    if address is None:
        cluster: Any = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                                    dashboard_address=None)
        client = Client(cluster)
    else:
        check_scheduler(address)
        cluster, client = None, Client(address, timeout=CONNECT_TIMEOUT)
        workers = max(1, len(client.scheduler_info()["workers"]))
    try:
        for st in ([stage] if stage else list(STAGES)):
            chosen = [p.name for p in spec.stage(st) if parts is None or p.name in set(parts)]
            if not chosen:
                continue
            dirs = [out / ".shards" / f"{st}-{k}-of-{workers}" for k in range(1, workers + 1)]
            futures = [client.submit(shard_task, spec, st, str(d), (k, workers), str(out), chosen,
                                     None if cache is None else str(cache), threads_per_worker, pure=False)
                       for k, d in enumerate(dirs, start=1)]
            client.gather(futures)
            merge(dirs, out)
            for d in dirs:
                shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(out / ".shards", ignore_errors=True)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return out
