"""Who may use the console: the holder of its token, from the console's own pages.

- A random token (as Jupyter's) is printed in the console's URL. Every request must present it: in the
  URL once (`?token=...`, answered by a redirect that sets a cookie and drops the token from the
  address bar), then as that cookie. The cookie is HttpOnly (no script reads it) and named after the
  port, since browsers share cookies between ports of one host.
- Cross-site requests: the cookie is SameSite=Strict, so a page of another site never sends it; but
  SameSite ignores ports, and any other web server on this machine is the same "site" as the console.
  So every request that is not a GET or HEAD must also carry an Origin header naming the console itself
  (browsers send Origin with every POST, same-origin ones included; a Sec-Fetch-Site header, when
  present, must say same-origin too). GET never changes anything. Together that is the OWASP
  "verify origin + SameSite" defence without a CSRF token to thread through every page: there is no
  form a foreign page could make the browser submit with the cookie, and no script of ours needs the
  token.
- On loopback the Host header must name the loopback address and port the console listens on: a
  page of a domain that resolves to 127.0.0.1 (DNS rebinding) gets nothing, not even the 401 page.

Pure functions of the request's headers, so they are tested without a server.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

#: Bytes of randomness in a token (192 bits: as many as Jupyter's).
TOKEN_BYTES = 24
SAFE_METHODS = frozenset({"GET", "HEAD"})


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def is_loopback(host: str) -> bool:
    """Is `host` (a name or an address, IPv6 with or without brackets) this machine's loopback?"""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_cookies(header: str) -> dict[str, str]:
    """name → value of a Cookie header (first wins). http.cookies gives up on a whole header when one
    of another site's cookies on this host is malformed; this does not."""
    out: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name and name not in out:
            out[name] = value.strip().strip('"')
    return out


@dataclass(frozen=True)
class Guard:
    token: str = field(repr=False)
    port: int
    #: the console listens on loopback only: the Host header must say so
    loopback: bool

    @property
    def cookie_name(self) -> str:
        return f"imgsync-console-{self.port}"

    def cookie(self) -> str:
        """The Set-Cookie value that carries the token from now on (a session cookie)."""
        return f"{self.cookie_name}={self.token}; Path=/; HttpOnly; SameSite=Strict"

    def token_ok(self, presented: str | None) -> bool:
        return presented is not None and secrets.compare_digest(presented.encode(), self.token.encode())

    def cookie_ok(self, headers: Mapping[str, str]) -> bool:
        return self.token_ok(parse_cookies(headers.get("cookie", "")).get(self.cookie_name))

    def host_ok(self, headers: Mapping[str, str]) -> bool:
        """On loopback: Host names a loopback address (or localhost) and our port."""
        if not self.loopback:
            return True
        host, port = split_host(headers.get("host", ""))
        return host is not None and is_loopback(host) and port == self.port

    def origin_problem(self, method: str, headers: Mapping[str, str]) -> str | None:
        """Why a request that may change something is refused as cross-site, or None. `headers` keys are
        lower-case."""
        if method in SAFE_METHODS:
            return None
        site = headers.get("sec-fetch-site")
        if site is not None and site != "same-origin":
            return f"a {site} request (only the console's own pages may change things)"
        origin = headers.get("origin")
        if not origin:
            return "no Origin header (only the console's own pages may change things)"
        if origin != f"http://{headers.get('host', '')}":
            return "a request from another origin (only the console's own pages may change things)"
        return None


def split_host(value: str) -> tuple[str | None, int | None]:
    """ "127.0.0.1:8809" → ("127.0.0.1", 8809); "[::1]:8809" → ("::1", 8809); no port → (host, 80)."""
    value = value.strip()
    if not value:
        return None, None
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    if not port_text:
        return host, 80
    return (host, int(port_text)) if port_text.isdecimal() else (None, None)
