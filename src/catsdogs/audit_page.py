"""AUDIT/audit.html: one self-contained page (thumbnails embedded), a section per kind of issue, the two photos
of a near-duplicate pair side by side. The most certain issues of each kind are shown; issues.csv has all."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from PIL import Image

from catsdogs.files import atomic_path
from catsdogs.images import ImageError, decode_image

THUMBNAIL = 160
SHOWN = 48  # per kind
TITLES = {"near_duplicate": "Near-duplicates (pairs across splits first: leakage)",
          "label": "Likely label errors", "outlier": "Outliers and ambiguous photos"}
STYLE = """
body{font-family:system-ui,sans-serif;margin:1rem;max-width:1200px;color:#222;overflow-wrap:anywhere}
h1{font-size:1.4rem}h2{font-size:1.15rem;margin-top:2rem}
.grid{display:flex;flex-wrap:wrap;gap:.75rem}
.card{border:1px solid #ccc;border-radius:6px;padding:.4rem;width:min(340px,100%);box-sizing:border-box;
 font-size:.8rem;overflow-wrap:anywhere}
.card.single{width:min(180px,100%)}
.pair{display:flex;gap:.3rem}.pair figure{flex:1;min-width:0}
figure{margin:0}img{max-width:100%;height:auto;display:block}
.leak{border-color:#c00;background:#fff4f4}.muted{color:#666}
"""


def thumbnail(path: Path) -> str:
    """A data: URI of a small JPEG of the photo (a grey square when it cannot be read)."""
    try:
        image = Image.fromarray(decode_image(path.read_bytes()).pixels)
    except (OSError, ImageError):
        image = Image.new("RGB", (THUMBNAIL, THUMBNAIL), (200, 200, 200))
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _figure(data_dir: Path, path: str, caption: str) -> str:
    return (f'<figure><img src="{thumbnail(data_dir / path)}" alt="{html.escape(path)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def write_audit_page(result, out: Path) -> Path:
    data_dir = result.data_dir
    parts = [f"<h1>catsdogs audit of {html.escape(str(data_dir))}</h1>",
             f"<p>{html.escape(result.line())}</p>",
             f"<p class=muted>Classes: {html.escape(', '.join(result.classes))}. Every issue is in issues.csv; "
             f"each section shows the {SHOWN} most certain.</p>"]
    for kind in TITLES:
        issues = result.of_kind(kind)
        parts.append(f'<h2 id="{kind}">{TITLES[kind]}: {len(issues)}</h2>')
        if not issues:
            parts.append("<p class=muted>None found.</p>")
            continue
        cards = []
        for issue in issues[:SHOWN]:
            if kind == "near_duplicate":
                other_split = issue.detail.split("/", 1)[0]
                leak = other_split != issue.split
                cards.append(f'<div class="card{" leak" if leak else ""}" data-kind="{kind}">'
                             f'<div class=pair>{_figure(data_dir, issue.detail, issue.detail)}'
                             f'{_figure(data_dir, issue.path, issue.path)}</div>'
                             f"<div>similarity {issue.score:.3f}{' &middot; <b>across splits</b>' if leak else ''}"
                             f"</div></div>")
            else:
                what = (f"labelled {issue.path.split('/')[1] if issue.path.count('/') >= 2 else '?'}, "
                        f"suggested {issue.detail}{'' if issue.confident is not False else ' (less certain)'}"
                        if kind == "label" else issue.detail)
                cards.append(f'<div class="card single" data-kind="{kind}">{_figure(data_dir, issue.path, issue.path)}'
                             f"<div>{html.escape(what)} &middot; score {issue.score:.3f}</div></div>")
        parts.append('<div class=grid>' + "".join(cards) + "</div>")
    page = ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width,initial-scale=1">'
            f"<title>catsdogs audit</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")
    with atomic_path(out) as partial:
        partial.write_text(page)
    return out
