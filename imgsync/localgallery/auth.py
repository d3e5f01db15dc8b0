"""API keys and access tokens: the `/oauth/2.0/token` exchange and the token check on every call.

The token endpoint answers like Baidu's OAuth server (api.md §2.1): a JSON body with access_token,
expires_in, refresh_token, scope (which must contain `brain_all_scope`, or the vendor SDKs switch to
BCE-signature mode and stop sending tokens, §2.2), session_key and session_secret.

Tokens are stateless: `24.<nonce><mac>.<ttl>.<issued>.282335-<appid>`, where mac is an HMAC of the
key, nonce, ttl and issue time under a key derived from the API key's secret and the gallery's token
realm (a random value its store made once). Checking one needs no storage, so tokens outlive
restarts, work on every replica of the gallery, and keep being issued when the gallery's disk is
full or its database is down; another gallery, even with the same key pair, answers 110. A token is
valid while it is unexpired (per the injected clock) and its API key is still configured with the
same secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from imgsync.localgallery.clock import SYSTEM_CLOCK, Clock
from imgsync.localgallery.errors import TOKEN_EXPIRED, TOKEN_INVALID, ApiError

DEFAULT_TOKEN_TTL = 2_592_000  # 30 days, the cloud's default
REFRESH_TTL = 315_360_000  # 10 years, as in the cloud's refresh tokens
SCOPE = " ".join(
    (
        "public",
        "brain_all_scope",
        "brain_realtime_same_hq",
        "brain_realtime_similar",
        "brain_realtime_product",
        "brain_realtime_picturebook",
        "brain_realtime_materiel",
        "wise_adapt",
        "lebo_resource_base",
        "lightservice_public",
        "hetu_basic",
        "lightcms_map_poi",
    )
)
KEY_FILE = "server-key.json"
#: A token's random part: 8 hex digits of nonce and 24 of MAC (96 bits), 32 like the cloud's.
_NONCE_HEX, _MAC_HEX = 8, 24


@dataclass(frozen=True, slots=True)
class TokenAnswer:
    """What the token endpoint sends back: an HTTP status and a JSON body."""

    status: int
    body: dict[str, object]


def _oauth_error(status: int, error: str, description: str) -> TokenAnswer:
    return TokenAnswer(status, {"error": error, "error_description": description})


def _app_id(api_key: str) -> int:
    """A stable, fake app id per key: the cloud's tokens end in "-<appid>"."""
    return int(hashlib.sha256(api_key.encode()).hexdigest()[:8], 16) % 100_000_000


class Authority:
    """Knows the API keys, issues tokens, checks them. Thread-safe (it holds no mutable state)."""

    def __init__(
        self,
        keys: Sequence[tuple[str, str]],
        *,
        ttl: int = DEFAULT_TOKEN_TTL,
        clock: Clock = SYSTEM_CLOCK,
        realm: str = "",
    ) -> None:
        """realm: the gallery's token realm (Store.token_realm): tokens are good where it is the same."""
        if ttl <= 0:
            raise ValueError(f"token ttl must be positive, got {ttl}")
        self._realm = realm.encode()
        self._keys = dict(keys)
        self._ttl = ttl
        self._clock = clock
        self._by_app: dict[int, list[str]] = {}
        for api_key in self._keys:
            self._by_app.setdefault(_app_id(api_key), []).append(api_key)

    def issue(self, params: Mapping[str, str]) -> TokenAnswer:
        """The token endpoint: grant_type=client_credentials, client_id, client_secret."""
        if params.get("grant_type") != "client_credentials":
            return _oauth_error(
                400,
                "unsupported_grant_type",
                "The authorization grant type is not supported by the authorization server.",
            )
        client_id = (params.get("client_id") or "").strip()
        client_secret = (params.get("client_secret") or "").strip()
        expected = self._keys.get(client_id)
        if expected is None:
            return _oauth_error(401, "invalid_client", "unknown client id")
        if not hmac.compare_digest(expected.encode(), client_secret.encode("utf-8", "surrogatepass")):
            return _oauth_error(401, "invalid_client", "Client authentication failed")
        return TokenAnswer(200, self._new_token(client_id))

    def _new_token(self, api_key: str) -> dict[str, object]:
        now = int(self._clock.time())
        nonce = secrets.token_hex(_NONCE_HEX // 2)
        tail = f"{now}.282335-{_app_id(api_key)}"
        token = f"24.{nonce}{self._mac(api_key, nonce, self._ttl, now)}.{self._ttl}.{tail}"
        return {
            "refresh_token": f"25.{secrets.token_hex(16)}.{REFRESH_TTL}.{tail}",
            "expires_in": self._ttl,
            "session_key": secrets.token_hex(32),
            "access_token": token,
            "scope": SCOPE,
            "session_secret": secrets.token_hex(16),
        }

    def _mac(self, api_key: str, nonce: str, ttl: int, issued: int) -> str:
        key = hashlib.sha256(b"imgsync access token\0" + self._realm + b"\0" + self._keys[api_key].encode()).digest()
        msg = f"{api_key}\0{nonce}\0{ttl}\0{issued}".encode()
        return hmac.new(key, msg, hashlib.sha256).hexdigest()[:_MAC_HEX]

    def check(self, token: str | None) -> str:
        """The API key behind `token`; ApiError 110 when missing/unknown, 111 when expired."""
        parsed = _parse_token(token or "")
        if parsed is None:
            raise ApiError(TOKEN_INVALID)
        nonce, mac, ttl, issued, app_id = parsed
        for api_key in self._by_app.get(app_id, ()):
            if hmac.compare_digest(self._mac(api_key, nonce, ttl, issued), mac):
                if issued + ttl <= self._clock.time():
                    raise ApiError(TOKEN_EXPIRED)
                return api_key
        raise ApiError(TOKEN_INVALID)


def _parse_token(token: str) -> tuple[str, str, int, int, int] | None:
    """(nonce, mac, ttl, issued, app id) of a well-formed token, else None."""
    parts = token.split(".")
    if len(parts) != 5 or parts[0] != "24" or not parts[4].startswith("282335-"):
        return None
    body, ttl, issued, app = parts[1], parts[2], parts[3], parts[4][len("282335-") :]
    if len(body) != _NONCE_HEX + _MAC_HEX or not all(c in "0123456789abcdef" for c in body):
        return None
    if not all(p.isascii() and p.isdigit() and len(p) <= 12 for p in (ttl, issued, app)):
        return None
    return body[:_NONCE_HEX], body[_NONCE_HEX:], int(ttl), int(issued), int(app)


def new_key() -> tuple[str, str]:
    """A fresh random (API key, secret key) pair."""
    return secrets.token_urlsafe(18), secrets.token_urlsafe(24)


def read_key(data_dir: Path) -> tuple[str, str] | None:
    """The server's own key pair from `<data_dir>/server-key.json`, or None if it has none yet."""
    path = data_dir / KEY_FILE
    if not path.exists():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    return str(saved["api_key"]), str(saved["secret_key"])


def load_or_create_key(data_dir: Path) -> tuple[tuple[str, str], bool]:
    """The server's own key pair from `<data_dir>/server-key.json`, created (mode 0600) on first use.

    Returns ((api_key, secret_key), created). The secret is stored in clear because the operator
    must be able to use it; the file is readable by its owner only.
    """
    path = data_dir / KEY_FILE
    saved = read_key(data_dir)
    if saved is not None:
        return saved, False
    data_dir.mkdir(parents=True, exist_ok=True)
    key = new_key()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"api_key": key[0], "secret_key": key[1]}, f)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written key file
    return key, True
