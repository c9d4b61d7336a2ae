"""What ``sela-edu label`` and ``sela-edu assign`` write besides labels.csv: the contact sheet
(``index.html``: per head, per cluster, its most confident images as embedded thumbnails) and the list of
skipped files (``skipped.txt``)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

import torch


def write_skipped(path: Path, skipped: Sequence[tuple[str, str]]) -> Path:
    """``path<TAB>reason`` per skipped file (an empty file when none was skipped)."""
    with open(path, "w", encoding="utf-8") as handle:
        for rel, reason in skipped:
            handle.write(f"{rel}\t{reason}\n")
    return path


def _thumbnail_uri(path: Path, size: int) -> str:
    from PIL import Image

    with Image.open(path) as im:
        if im.format == "JPEG":
            im.draft("RGB", (2 * size, 2 * size))
        im = im.convert("RGB")
        im.thumbnail((size, size))
        buffer = io.BytesIO()
        im.save(buffer, format="PNG" if max(im.size) <= 96 else "JPEG", optimize=True)
    kind = "png" if max(im.size) <= 96 else "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def write_contact_sheet(path: Path, folder: Path, paths: Sequence[str], labels: torch.Tensor,
                        confidence: torch.Tensor | None = None, *, per_cluster: int = 24, thumb: int = 72,
                        title: str = "clusters", skipped: int = 0) -> Path:
    """An HTML page: per head, per cluster (largest first), its size and up to ``per_cluster`` thumbnails
    (most confident first, or in file order without ``confidence``); hovering shows the file's path."""
    labels = torch.as_tensor(labels)
    if labels.dim() == 1:
        labels = labels.unsqueeze(0)
    cache: dict[int, str] = {}
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>",
        "body{font-family:sans-serif;margin:1em}h2{margin-top:1.5em}"
        ".c{margin:.4em 0;padding:.3em;border-bottom:1px solid #ddd}.c b{display:inline-block;width:11em}"
        f"img{{width:{thumb}px;height:{thumb}px;object-fit:cover;margin:1px;image-rendering:auto}}"
        "summary{cursor:pointer;font-size:1.2em;margin-top:1em}",
        "</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{len(paths)} images labelled; {skipped} file(s) skipped (see skipped.txt); labels in labels.csv. "
        "Hover over a thumbnail for its path.</p>",
        "<p>" + " · ".join(f"<a href='#head{h}'>head {h} ({int(labels[h].max()) + 1} clusters)</a>"
                           for h in range(labels.shape[0])) + "</p>",
    ]
    for h in range(labels.shape[0]):
        row = labels[h]
        k = int(row.max()) + 1
        sizes = torch.bincount(row, minlength=k)
        parts.append(f"<details id='head{h}' {'open' if h == 0 else ''}><summary>head {h}: {k} clusters, "
                     f"sizes {int(sizes.min())}-{int(sizes.max())}</summary>")
        for c in torch.argsort(sizes, descending=True, stable=True).tolist():
            members = torch.nonzero(row == c).flatten()
            if confidence is not None and members.numel():
                members = members[torch.argsort(confidence[h, members], descending=True, stable=True)]
            imgs = []
            for i in members[:per_cluster].tolist():
                if i not in cache:
                    try:
                        cache[i] = _thumbnail_uri(folder / paths[i], thumb)
                    except Exception:  # noqa: BLE001 - a file changed since labelling: leave it out
                        continue
                imgs.append(f"<img src='{cache[i]}' title='{html.escape(paths[i], quote=True)}' loading='lazy'>")
            parts.append(f"<div class='c'><b>cluster {c} ({int(sizes[c])} images)</b>{''.join(imgs)}</div>")
        parts.append("</details>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


__all__ = ["write_contact_sheet", "write_skipped"]
