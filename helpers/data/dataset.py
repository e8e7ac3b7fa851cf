"""Build ``input_images/``: packaged photos + composites, top-5 filter, val/test split, manifest.

The split is disjoint by source: every packaged photo and texture is assigned to ``val`` or
``test`` by a seeded permutation, and a composite only uses the objects and backgrounds of its own
split. Everything random derives from one seed, PNGs are written without metadata and the
manifest with fixed formatting, so a rebuild gives byte-identical files.
"""
from __future__ import annotations

import hashlib
import io
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from PIL import Image

from ..cam.bundle import ModelBundle
from ..config import INPUT_DIR, SEED
from .composites import (
    CANVAS,
    MARGIN,
    Placed,
    compose,
    cut_box,
    find_place,
    fit_in,
    half_windows,
    noise_background,
    overlaps,
    plain_background,
    scale_to,
    texture_background,
)
from .images import SPLITS, to_crop_box, top5_of, write_manifest
from .photos import PHOTOS, TEXTURES, PhotoSpec, load_offline, model_sized, square_background

#: How many photo ids / texture ids go to the validation split (the rest is test).
N_VAL_PHOTOS, N_VAL_TEXTURES = 3, 1
#: Composites to keep per split: (single-object, two-object); at most MAX_TRIES_FACTOR x as many are tried.
COMPOSITE_QUOTAS: dict[str, tuple[int, int]] = {"val": (20, 0), "test": (52, 8)}
MAX_TRIES_FACTOR: int = 3
#: Longer side of a pasted object in single-object composites, in pixels.
SINGLE_SIDE: tuple[int, int] = (110, 200)
#: Longer side at which an object's cut alone must still be recognised to be pasted into
#: single-object and two-object composites (about the middle of each size range).
PASTE_CHECK_SIDES: tuple[int, int] = (150, 112)
BACKGROUNDS: tuple[str, ...] = ("photo", "texture", "plain", "noise")


@dataclass
class Candidate:
    """One image before the top-5 filter."""

    file: str
    image: Image.Image
    kind: str
    split: str
    objects: list[Placed]          # the asserted objects (all must be in the top-5 for a composite)
    context: list[Placed]          # a background photo's own object (recorded, not required)
    sources: list[str]
    orig_size: tuple[int, int]


@dataclass
class BuildReport:
    """What :func:`build_dataset` did."""

    manifest: pd.DataFrame
    skipped: list[str] = field(default_factory=list)      # sources not available offline
    not_pasted: list[str] = field(default_factory=list)   # objects not recognised when cut out alone
    dropped: list[str] = field(default_factory=list)      # composites whose classes were not in the top-5
    n_tried: int = 0
    seconds: float = 0.0


def assign_splits(ids: list[str], n_val: int, seed: int = SEED) -> dict[str, str]:
    """Seeded split of source ids: ``n_val`` of them to ``val``, the rest to ``test``."""
    order = np.random.default_rng(seed).permutation(len(ids))
    return {ids[i]: ("val" if rank < n_val else "test") for rank, i in enumerate(order)}


def photo_candidate(spec: PhotoSpec, photo: Image.Image, split: str) -> Candidate:
    """A packaged photo, stored with its shorter side at 256 (the model's input is unchanged)."""
    placed = Placed(spec.id, spec.label_idx, spec.label_name, spec.box)
    return Candidate(f"photo_{spec.id}.png", model_sized(photo), "photo", split, [placed], [], [spec.id],
                     photo.size)


def _background(kind: str, split_photos: dict, textures: dict, rng: np.random.Generator,
                exclude: set[str]) -> tuple[Image.Image, str, list[Placed]]:
    """A canvas background of ``kind``: (image, source id, the background photo's own object).
    Without another photo (or texture) in the split, a texture (or plain colour) stands in."""
    others = sorted(set(split_photos) - exclude)
    if kind == "photo" and others:
        spec, photo = split_photos[str(rng.choice(others))]
        box = to_crop_box(spec.box, photo.size, resize=CANVAS, crop=CANVAS)
        visible = overlaps(box, (MARGIN, MARGIN, CANVAS - MARGIN, CANVAS - MARGIN))
        context = [Placed(spec.id, spec.label_idx, spec.label_name, box)] if visible else []
        return square_background(photo), spec.id, context
    if kind in ("photo", "texture") and textures:
        tid = str(rng.choice(sorted(textures)))
        return texture_background(textures[tid], rng), tid, []
    return (noise_background(rng), "noise", []) if kind == "noise" else (plain_background(rng), "plain", [])


def composite_candidate(name: str, split: str, specs: list[PhotoSpec], split_photos: dict, textures: dict,
                        bg_kind: str, rng: np.random.Generator) -> Candidate | None:
    """Paste the box region of each spec's photo onto a ``bg_kind`` background.

    One object: longer side drawn from :data:`SINGLE_SIDE`, placed at random without covering a
    background photo's own object (None if it does not fit). Two objects: each as large as 80-100%
    of its half of the window allows (side by side or stacked), so they never overlap.
    """
    background, bg_id, context = _background(bg_kind, split_photos, textures, rng, {s.id for s in specs})
    cuts = [cut_box(split_photos[s.id][1], s.box) for s in specs]
    if len(specs) == 1:
        cut = scale_to(cuts[0], int(rng.integers(SINGLE_SIDE[0], SINGLE_SIDE[1] + 1)))
        box = find_place(rng, cut.size, [c.box for c in context])
        if box is None:
            return None
        placements = [(cut, box)]
    else:
        placements = []
        for cut, region in zip(cuts, half_windows([c.size for c in cuts]), strict=True):
            size, box = fit_in(rng, cut.size, region)
            placements.append((cut.resize(size, Image.BILINEAR), box))
    pasted = [(im, Placed(s.id, s.label_idx, s.label_name, box))
              for s, (im, box) in zip(specs, placements, strict=True)]
    ids = "+".join(s.id for s in specs)
    return Candidate(f"comp_{name}_{ids}_on_{bg_id}.png", compose(background, pasted), "composite", split,
                     [p for _, p in pasted], context, [s.id for s in specs] + [bg_id], (CANVAS, CANVAS))


def candidate_stream(split: str, n_objects: int, split_photos: dict, objects: list[str], textures: dict,
                     rng: np.random.Generator) -> Iterator[Candidate]:
    """Endless composites of one split: single objects round-robin with the background kind
    cycling per round, or all pairs of different objects in turn on texture/plain/noise."""
    groups = [[i] for i in objects] if n_objects == 1 else [list(p) for p in itertools.combinations(objects, 2)]
    kinds = BACKGROUNDS if n_objects == 1 else BACKGROUNDS[1:]
    if not groups:
        return
    for k in itertools.count():
        specs = [split_photos[i][0] for i in groups[k % len(groups)]]
        specs = [specs[i] for i in rng.permutation(len(specs))]
        name = f"{split}_{n_objects}obj_{k:03d}"
        cand = composite_candidate(name, split, specs, split_photos, textures,
                                   kinds[(k // len(groups)) % len(kinds)], rng)
        # the objects did not fit around a background photo's own object: a texture instead
        cand = cand or composite_candidate(name, split, specs, split_photos, textures,
                                           "texture" if textures else "plain", rng)
        if cand is not None:
            yield cand


def missing_classes(cand: Candidate, top5: list[tuple[int, str, float]]) -> list[str]:
    """The candidate's asserted classes that are not in the model's top-5."""
    predicted = {i for i, _, _ in top5}
    return [p.class_name for p in cand.objects if p.class_idx not in predicted]


def fill(bundle: ModelBundle, stream: Iterator[Candidate], need: int, max_tries: int
         ) -> tuple[list[tuple[Candidate, list]], list[str]]:
    """Draw candidates from ``stream`` until ``need`` have all their classes in the top-5 (or
    ``max_tries`` were drawn): ``([(candidate, top5) kept], [why each dropped one was dropped])``.
    Each round draws just as many as are still missing, so few forwards are wasted."""
    kept: list[tuple[Candidate, list]] = []
    dropped: list[str] = []
    tried = 0
    while len(kept) < need and tried < max_tries:
        batch = list(itertools.islice(stream, min(need - len(kept), max_tries - tried)))
        if not batch:
            break
        tried += len(batch)
        for cand, t5 in zip(batch, top5_of(bundle, [c.image for c in batch]), strict=True):
            missing = missing_classes(cand, t5)
            if missing:
                dropped.append(f"{cand.file}: {', '.join(missing)} not in top-5 ({', '.join(n for _, n, _ in t5)})")
            else:
                kept.append((cand, t5))
    return kept, dropped


def pasteable(bundle: ModelBundle, specs: dict[str, PhotoSpec], photos: dict[str, Image.Image],
              side: int) -> tuple[list[str], list[str]]:
    """Objects whose cut alone (longer side ``side``, centred on mid-gray) keeps its class in the
    top-5: only these are pasted at that size. Returns (ids, [why each other one is not])."""
    canvases = []
    for i, spec in specs.items():
        cut = scale_to(cut_box(photos[i], spec.box), side)
        canvas = Image.new("RGB", (CANVAS, CANVAS), (128, 128, 128))
        canvas.paste(cut, ((CANVAS - cut.size[0]) // 2, (CANVAS - cut.size[1]) // 2))
        canvases.append(canvas)
    ok, rejected = [], []
    for (i, spec), t5 in zip(specs.items(), top5_of(bundle, canvases), strict=True):
        if spec.label_idx in {c for c, _, _ in t5}:
            ok.append(i)
        else:
            rejected.append(f"{i} at {side} px: its cut alone is not '{spec.label_name}' to the model "
                            f"(top-5: {', '.join(n for _, n, _ in t5)})")
    return ok, rejected


def png_bytes(image: Image.Image) -> bytes:
    """Deterministic PNG encoding (no metadata)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def box_record(placed: Placed, orig_size: tuple[int, int]) -> dict:
    """One manifest box: class, crop box (224 input) and orig box (pixels of ``orig_size``)."""
    return {"class_idx": placed.class_idx, "class_name": placed.class_name,
            "crop": list(to_crop_box(placed.box, orig_size)), "orig": [round(float(v), 2) for v in placed.box]}


def manifest_row(cand: Candidate, top5: list[tuple[int, str, float]], data: bytes, licences: dict[str, str]) -> dict:
    """The manifest row of a kept candidate."""
    predicted = {i for i, _, _ in top5}
    return {"file": cand.file, "sha256": hashlib.sha256(data).hexdigest(), "source": "+".join(cand.sources),
            "licence": "; ".join(f"{s}: {licences[s]}" for s in cand.sources if s in licences),
            "kind": cand.kind, "split": cand.split, "label_idx": cand.objects[0].class_idx,
            "label_name": cand.objects[0].class_name,
            "boxes": json.dumps([box_record(p, cand.orig_size) for p in cand.objects + cand.context]),
            "top5": json.dumps([[i, n, round(p, 4)] for i, n, p in top5]),
            "label_in_top5": cand.objects[0].class_idx in predicted,
            "orig_size": f"{cand.orig_size[0]}x{cand.orig_size[1]}", "n_objects": len(cand.objects)}


def build_dataset(bundle: ModelBundle, out_dir: str | Path = INPUT_DIR, seed: int = SEED,
                  quotas: dict[str, tuple[int, int]] | None = None) -> BuildReport:
    """Build every image and the manifest into ``out_dir`` (old ``photo_*``/``comp_*`` PNGs removed).

    ``quotas[split] = (single-object, two-object)`` composites to keep (default :data:`COMPOSITE_QUOTAS`);
    at most :data:`MAX_TRIES_FACTOR` times as many are tried.
    """
    start = time.perf_counter()
    quotas = quotas or COMPOSITE_QUOTAS
    photos, skipped = load_offline(PHOTOS)
    textures, skipped_t = load_offline(TEXTURES)
    specs = {s.id: s for s in PHOTOS if s.id in photos}
    split_of = assign_splits(list(specs), N_VAL_PHOTOS, seed) | assign_splits(list(textures), N_VAL_TEXTURES, seed)
    licences = {s.id: s.licence for s in PHOTOS + TEXTURES} | {"plain": "generated", "noise": "generated"}
    photo_cands = [photo_candidate(specs[i], photos[i], split_of[i]) for i in specs]
    kept = list(zip(photo_cands, top5_of(bundle, [c.image for c in photo_cands]), strict=True))
    checks = [pasteable(bundle, specs, photos, side) for side in PASTE_CHECK_SIDES]
    not_pasted = [msg for _, rejected in checks for msg in rejected]
    dropped: list[str] = []
    n_tried = len(photo_cands)
    for k, split in enumerate(SPLITS):
        mine = {i: (specs[i], photos[i]) for i in specs if split_of[i] == split}
        tex = {t: im for t, im in textures.items() if split_of[t] == split}
        for n_objects, need in zip((1, 2), quotas[split], strict=True):
            rng = np.random.default_rng([seed, k, n_objects])
            objects = [i for i in checks[n_objects - 1][0] if i in mine]
            stream = candidate_stream(split, n_objects, mine, objects, tex, rng)
            got, lost = fill(bundle, stream, need, MAX_TRIES_FACTOR * need)
            kept += got
            dropped += lost
            n_tried += len(got) + len(lost)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in itertools.chain(out_dir.glob("photo_*.png"), out_dir.glob("comp_*.png")):
        old.unlink()
    rows = []
    for cand, t5 in kept:
        data = png_bytes(cand.image)
        (out_dir / cand.file).write_bytes(data)
        rows.append(manifest_row(cand, t5, data, licences))
    manifest = pd.DataFrame(rows)
    write_manifest(manifest, out_dir / "manifest.csv")
    return BuildReport(manifest, skipped + skipped_t, not_pasted, dropped, n_tried, time.perf_counter() - start)
