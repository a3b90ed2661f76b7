"""`serve`: the app in a browser tab, for whoever holds the token printed at start only.

Every account on a shared host can reach 127.0.0.1, and a web page in the user's browser
can reach a forwarded port; both could otherwise drive the Run pane, which launches
commands as the serving user. So every request, page, static file, download and
websocket alike, must carry the token: once as `?token=` in the URL printed at start
(as Jupyter does), after which a cookie (`HttpOnly; SameSite=Strict`) carries it. A
request from a foreign `Origin`, or addressed to a host name that is not loopback (DNS
rebinding), is refused even with the token. The token lives in this process only: the
served apps are started without it, and it is never in any argument list.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web
from textual_serve.server import Server

TOKEN_PARAMETER = "token"
COOKIE_PREFIX = "evalwb_serve_"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REFUSED = "evalwb-tui serve: refused; open the URL with ?token=... that `evalwb-tui serve` printed"
FOREIGN_ORIGIN = "evalwb-tui serve: refused; this request comes from another site's page"
FOREIGN_HOST = "evalwb-tui serve: refused; open the server by its loopback address"


def loopback_host(host: str) -> bool:
    """True for `localhost` and loopback addresses (IPv6 with or without brackets)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    """The host of a `Host` header without its port: `[::1]:8000` → `[::1]`."""
    if host_header.startswith("["):
        return host_header.split("]", 1)[0] + "]"
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def same_token(given: str, token: str) -> bool:
    """Constant-time comparison, so timing tells nothing about the token."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))


class TokenServer(Server):
    """textual-serve's server behind a token, an Origin check and a loopback Host check."""

    def __init__(self, command: str, *, host: str, port: int, title: str) -> None:
        super().__init__(command, host=host, port=port, title=title)
        self.token = secrets.token_urlsafe(32)
        # Browsers keep cookies per host, not per port: one name per port keeps two
        # servers on one host from overwriting each other's cookie.
        self.cookie_name = f"{COOKIE_PREFIX}{port}"

    @property
    def open_url(self) -> str:
        """The URL to open: the page, with the token."""
        return f"{self.public_url}/?{TOKEN_PARAMETER}={self.token}"

    def initialize_logging(self) -> None:
        super().initialize_logging()
        # aiohttp logs each request line at INFO; the first one holds the token.
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        app.middlewares.append(self._guard)
        return app

    async def on_startup(self, app: web.Application) -> None:
        print(f"evalwb-tui serve: open {self.open_url}  (Ctrl+C stops)", flush=True)

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        refusal = self.refusal(request)
        if refusal is not None:
            return web.Response(status=403, text=refusal + "\n")
        if self._has_cookie(request):
            return await handler(request)
        given = request.query.get(TOKEN_PARAMETER)
        if request.path == "/" and given is not None and same_token(given, self.token):
            # The token leaves the address bar and history: the cookie carries it on.
            query = {k: v for k, v in request.query.items() if k != TOKEN_PARAMETER}
            response = web.HTTPSeeOther(request.rel_url.with_query(query).path_qs)
            response.set_cookie(
                self.cookie_name, self.token, path="/", httponly=True, samesite="Strict"
            )
            response.headers["Cache-Control"] = "no-store"
            return response
        return web.Response(status=403, text=REFUSED + "\n")

    def refusal(self, request: web.Request) -> str | None:
        """Why `request` is refused whatever it carries, or None."""
        host = request.host
        if not loopback_host(_host_name(host)):
            return FOREIGN_HOST
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"http://{host}":
            return FOREIGN_ORIGIN
        return None

    def _has_cookie(self, request: web.Request) -> bool:
        given = request.cookies.get(self.cookie_name)
        return given is not None and same_token(given, self.token)
