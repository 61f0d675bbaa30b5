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


class SecurityHeaders:
    """ASGI middleware adding PAGE_HEADERS (CSP, nosniff, no-store) to every HTTP response that lacks them."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name.lower().encode("latin-1"), value.encode("latin-1"))
                         for name, value in PAGE_HEADERS.items() if name.lower().encode("latin-1") not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
