"""API keys and access tokens: the `/oauth/2.0/token` exchange and the token check on every call.

The token endpoint answers like Baidu's OAuth server (api.md §2.1): a JSON body with access_token,
expires_in, refresh_token, scope (which must contain `brain_all_scope`, or the vendor SDKs switch to
BCE-signature mode and stop sending tokens, §2.2), session_key and session_secret.

Tokens outlive the process: each issued token is stored in `<data_dir>/tokens.sqlite` by its SHA-256
digest only, so the file alone cannot be used to call the gallery. A token is valid while it is
unexpired (per the injected clock) and its API key is still one the server was started with.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from imgsync.localgallery.clock import SYSTEM_CLOCK, Clock
from imgsync.localgallery.errors import TOKEN_EXPIRED, TOKEN_INVALID, ApiError

DEFAULT_TOKEN_TTL = 2_592_000  # 30 days, the cloud's default
REFRESH_TTL = 315_360_000  # 10 years, as in the cloud's refresh tokens
SCOPE = " ".join((
    "public", "brain_all_scope", "brain_realtime_same_hq", "brain_realtime_similar",
    "brain_realtime_product", "brain_realtime_picturebook", "brain_realtime_materiel",
    "wise_adapt", "lebo_resource_base", "lightservice_public", "hetu_basic", "lightcms_map_poi",
))
KEY_FILE = "server-key.json"
TOKEN_DB = "tokens.sqlite"


@dataclass(frozen=True, slots=True)
class TokenAnswer:
    """What the token endpoint sends back: an HTTP status and a JSON body."""

    status: int
    body: dict[str, object]


def _oauth_error(status: int, error: str, description: str) -> TokenAnswer:
    return TokenAnswer(status, {"error": error, "error_description": description})


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _app_id(api_key: str) -> int:
    """A stable, fake app id per key: the cloud's tokens end in "-<appid>"."""
    return int(hashlib.sha256(api_key.encode()).hexdigest()[:8], 16) % 100_000_000


class Authority:
    """Knows the API keys, issues tokens, checks them. Thread-safe."""

    def __init__(self, data_dir: Path, keys: Sequence[tuple[str, str]], *, ttl: int = DEFAULT_TOKEN_TTL,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        if ttl <= 0:
            raise ValueError(f"token ttl must be positive, got {ttl}")
        self._keys = dict(keys)
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        data_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(data_dir / TOKEN_DB, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS tokens (digest TEXT PRIMARY KEY, api_key TEXT NOT NULL,"
                         " expires_at REAL NOT NULL)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def issue(self, params: Mapping[str, str]) -> TokenAnswer:
        """The token endpoint: grant_type=client_credentials, client_id, client_secret."""
        if params.get("grant_type") != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type",
                                "The authorization grant type is not supported by the authorization server.")
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
        tail = f"{now}.282335-{_app_id(api_key)}"
        token = f"24.{secrets.token_hex(16)}.{self._ttl}.{tail}"
        with self._lock:
            self._db.execute("INSERT INTO tokens VALUES (?, ?, ?)", (_digest(token), api_key, now + self._ttl))
            # Keep the table small: forget tokens that expired more than a day ago.
            self._db.execute("DELETE FROM tokens WHERE expires_at < ?", (now - 86_400,))
        return {
            "refresh_token": f"25.{secrets.token_hex(16)}.{REFRESH_TTL}.{tail}",
            "expires_in": self._ttl,
            "session_key": secrets.token_hex(32),
            "access_token": token,
            "scope": SCOPE,
            "session_secret": secrets.token_hex(16),
        }

    def check(self, token: str | None) -> str:
        """The API key behind `token`; ApiError 110 when missing/unknown, 111 when expired."""
        if not token:
            raise ApiError(TOKEN_INVALID)
        with self._lock:
            row = self._db.execute("SELECT api_key, expires_at FROM tokens WHERE digest = ?",
                                   (_digest(token),)).fetchone()
        if row is None or row[0] not in self._keys:
            raise ApiError(TOKEN_INVALID)
        if row[1] <= self._clock.time():
            raise ApiError(TOKEN_EXPIRED)
        return str(row[0])


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
    key = (secrets.token_urlsafe(18), secrets.token_urlsafe(24))
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"api_key": key[0], "secret_key": key[1]}, f)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written key file
    return key, True
