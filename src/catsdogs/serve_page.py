"""The single, self-contained page of `catsdogs serve` (static/serve.html: inline CSS and JS, no external
resource) and the headers it is served with."""

from __future__ import annotations

from functools import cache
from importlib import resources

# Nothing but this page's own inline code and the API on the same origin: works offline, and an
# uploaded file name can never become markup (the script only ever sets textContent).
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "img-src data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@cache
def page_html() -> str:
    """The page's HTML, read once from the package's data files."""
    return resources.files("catsdogs").joinpath("static", "serve.html").read_text(encoding="utf-8")
