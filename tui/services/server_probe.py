"""Whether a W&B server answers, asked at the HTTP level within a few seconds.

A TCP connect is not enough: a server (or proxy) that accepts connections and never
answers would pass it, and the SDK would then wait on it for minutes. The probe sends
one HEAD request for the server's URL (any HTTP status counts as an answer: every HTTP
server must answer one, and a HEAD asks for no body) and waits for the status line, the
whole exchange bounded by one deadline. Where the environment sets a proxy for the
server (`https_proxy`, `no_proxy`), the SDK goes through it, so the probe does too.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import urllib.error
import urllib.request
from urllib.parse import ParseResult, urlparse


def server_problem(base_url: str, timeout: float) -> str | None:
    """Why the W&B server at `base_url` gives no HTTP answer within `timeout` seconds,
    in a few words; None when it answers."""
    server = urlparse(base_url)
    if not server.hostname:
        return f"{base_url!r} is not a URL"
    target, via, proxy = server, "", urllib.request.getproxies().get(server.scheme)
    if proxy and urllib.request.proxy_bypass(server.hostname):
        proxy = None
    if proxy:
        proxy = proxy if "://" in proxy else f"http://{proxy}"
        target, via = urlparse(proxy), "the proxy "
        if not target.hostname:
            # Not repeated: a proxy URL may hold a user name and password.
            return f"the {server.scheme}_proxy the environment sets is not a URL"
    host = f"{via}{target.hostname}"
    where = f"{host}:{target.port or (443 if target.scheme == 'https' else 80)}"
    answer: list[str | None] = []

    def ask() -> None:
        try:
            _ask(server, proxy, timeout)
            answer.append(None)
        except Exception as exc:  # each failure becomes a few words
            answer.append(_reason(exc, host, where, timeout))

    # A thread, so that one deadline bounds the whole exchange, name lookup included
    # (getaddrinfo has no timeout of its own).
    asker = threading.Thread(target=ask, name="server-probe", daemon=True)
    asker.start()
    asker.join(timeout)
    return answer[0] if answer else f"{where} did not answer in {timeout:g} s"


def _ask(server: ParseResult, proxy: str | None, timeout: float) -> None:
    """HEAD the server's URL, through `proxy` if given; raises unless a status line came."""
    url = server._replace(path=server.path or "/", fragment="")
    proxies = {server.scheme: proxy} if proxy else {}
    opener = urllib.request.build_opener(urllib.request.ProxyHandler(proxies))
    try:
        with opener.open(urllib.request.Request(url.geturl(), method="HEAD"), timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # any status is an answer
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, BaseException):
            raise exc.reason from None
        raise


def _reason(exc: BaseException, host: str, where: str, timeout: float) -> str | None:
    if isinstance(exc, socket.gaierror):
        return f"{host} is not a known host name"
    if isinstance(exc, TimeoutError):
        return f"{where} did not answer in {timeout:g} s"
    if isinstance(exc, http.client.RemoteDisconnected):
        return f"{where} closed the connection without an answer"
    if isinstance(exc, http.client.HTTPException):
        return f"{where} did not answer in HTTP"
    if isinstance(exc, ssl.SSLError):
        return None  # it answered in TLS; what the SDK makes of its certificate is its say
    if isinstance(exc, OSError) and exc.strerror:
        return f"{where}: {exc.strerror.lower()}"
    return f"{where}: {' '.join(str(exc).split()).lower() or type(exc).__name__}"
