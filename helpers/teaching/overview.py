"""Looking at a manifest: counts per split/kind/class and a contact sheet with the boxes drawn."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from ..config import MANIFEST, SEED
from ..data.images import CROP, load_image, model_view, read_manifest
from ..data.restricted import note_shown

#: Box colours in order of the boxes in a manifest row (the asserted label's box first).
BOX_COLOURS: tuple[str, ...] = ("#ff2d2d", "#2dd0ff", "#ffe02d", "#7cff2d")


def counts(manifest: pd.DataFrame) -> pd.DataFrame:
    """Images per split and kind (photos; composites by number of pasted objects), with totals."""
    n_obj = manifest["n_objects"] if "n_objects" in manifest else pd.Series(1, index=manifest.index)
    kind = manifest["kind"].where(manifest["kind"] == "photo",
                                  n_obj.map(lambda n: f"composite, {n} object{'s' if int(n) > 1 else ''}"))
    table = pd.crosstab(manifest["split"], kind, margins=True, margins_name="total")
    table.columns.name = None
    return table


def class_counts(manifest: pd.DataFrame) -> pd.DataFrame:
    """Boxes per ImageNet class and split (a two-object image counts for both of its classes)."""
    rows = [(r.split, box["class_name"]) for r in manifest.itertuples() for box in json.loads(r.boxes)]
    table = pd.crosstab(pd.Series([c for _, c in rows], name="class"), pd.Series([s for s, _ in rows], name="split"))
    table.columns.name = None
    return table


def contact_sheet(out: str | Path, manifest: str | Path = MANIFEST, cols: int = 10, thumb: int = 128,
                  root: str | Path | None = None, sample: int | None = None, seed: int = SEED) -> Path:
    """Thumbnails of what the model sees (224 centre crop) with every box and the label; saved to ``out``.

    Files are read relative to ``root`` (default: the manifest's folder); ``sample`` keeps that
    many seeded random rows (in manifest order) instead of all.
    """
    manifest = Path(manifest)
    df = read_manifest(manifest)
    if sample is not None and sample < len(df):
        df = df.sample(n=sample, random_state=seed).sort_index()
    folder = Path(root) if root is not None else manifest.parent
    font = ImageFont.load_default(size=11)
    cell_h = thumb + 28
    rows = (len(df) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * thumb, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    scale = thumb / CROP
    for k, row in enumerate(df.itertuples()):
        x, y = (k % cols) * thumb, (k // cols) * cell_h
        sheet.paste(model_view(load_image(folder / row.file)).resize((thumb, thumb), Image.BILINEAR), (x, y))
        boxes = json.loads(row.boxes)
        for j, box in enumerate(boxes):
            x0, y0, x1, y1 = (v * scale for v in box["crop"])
            draw.rectangle((x + x0, y + y0, x + x1 - 1, y + y1 - 1), outline=BOX_COLOURS[j % len(BOX_COLOURS)], width=2)
        label = " + ".join(b["class_name"] for b in boxes) or row.label_name
        draw.text((x + 2, y + thumb + 1), label[:thumb // 6], fill="black", font=font)
        draw.text((x + 2, y + thumb + 14), f"{row.split} | {row.kind}", fill="#555555", font=font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def preview(path: str | Path, width: int = 900, quality: int = 85) -> Any:
    """A light JPEG copy of a (large) PNG for showing in a notebook without bloating it."""
    import io

    from IPython.display import Image as Show
    note_shown(path)                       # a figure of licence-restricted photos marks the cell
    image = Image.open(path).convert("RGB")
    image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return Show(data=buf.getvalue(), format="jpeg")
