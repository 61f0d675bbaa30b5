"""Small HTML building blocks shared by the report's sections: escaped text, numbers, tables, embedded images."""

from __future__ import annotations

import base64
import html
import math
import mimetypes
from collections.abc import Sequence
from pathlib import Path

DASH = "\u2014"


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def text(value) -> str:
    return DASH if value is None or value == "" else str(value)


def num(value, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if is_number(value) else DASH


def share(value) -> str:
    """A fraction as a percentage with one decimal, or a dash."""
    return f"{value:.1%}" if is_number(value) else DASH


def escape(value) -> str:
    return html.escape(str(value), quote=True)


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def figure(data: bytes, caption: str, mime: str = "image/png") -> str:
    return (f'<figure><img src="{data_uri(data, mime)}" alt="{escape(caption)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def file_figure(path: Path, caption: str | None = None) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return figure(path.read_bytes(), caption or path.stem.replace("_", " "), mime)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], *, kind: str = "",
          published_from: int | None = None) -> str:
    """An HTML table (CSS class ``kind``) of formatted, unescaped cells, in a horizontally scrolling box.

    Columns from ``published_from`` on are marked as published numbers.
    """

    def cells(tag: str, values: Sequence[str]) -> str:
        return "".join(
            f'<{tag} class="published">{escape(v)}</{tag}>' if published_from is not None and i >= published_from
            else f"<{tag}>{escape(v)}</{tag}>"
            for i, v in enumerate(values)
        )

    body = "".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    return (f'<div class="scroll"><table class="{kind}"><thead><tr>{cells("th", header)}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")
