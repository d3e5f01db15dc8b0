"""The access token: fetched lazily from /oauth/2.0/token, reused, refreshed before it expires.

Kept in memory only: neither the token nor the keys are ever written to disk (the PHP SDK's token
file is the counter-example). The token endpoint's answer is checked by `parse_token_answer` (pure):
it must carry access_token and expires_in, and its scope must contain `brain_all_scope`: without it
the key belongs to a Baidu Cloud (BCE) user, not to an AI application, and the image-search API
would refuse the token (the vendor SDKs switch to BCE request signing then, api.md §2.2).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from imgsync.clock import Clock
from imgsync.errors import GalleryAuthError, GalleryUnavailableError

log = logging.getLogger("imgsync.gallery")

AI_APP_SCOPE = "brain_all_scope"
#: Refresh a token this long before it expires at most (the Java SDK's margin) ...
MAX_REFRESH_MARGIN = 86_400.0


def refresh_margin(expires_in: float) -> float:
    """... and at most a tenth of its lifetime, so short-lived tokens are still used."""
    return min(expires_in / 10.0, MAX_REFRESH_MARGIN)


@dataclass(frozen=True, slots=True)
class Token:
    value: str = field(repr=False)
    expires_in: float
    #: clock.time() at which to fetch a new one (expiry minus the margin).
    refresh_at: float


def parse_token_answer(payload: Mapping[str, Any], now: float) -> Token:
    """A successful token answer → Token. Error answers ({"error": ...}) are raise_for_error's job."""
    scope = str(payload.get("scope") or "").split()
    if AI_APP_SCOPE not in scope:
        raise GalleryAuthError(
            f"this key's token lacks the {AI_APP_SCOPE} scope: it looks like a Baidu Cloud user (BCE) "
            "access key, not an AI application's API Key; create an application with image search in the "
            "Baidu AI console and use its API Key and Secret Key"
        )
    token = payload.get("access_token")
    if not isinstance(token, str) or not token.strip():
        raise GalleryUnavailableError("the token answer has no access_token")
    try:
        expires_in = float(payload.get("expires_in"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise GalleryUnavailableError("the token answer has no valid expires_in") from None
    if not expires_in > 0:
        raise GalleryUnavailableError(f"the token answer says it expires in {expires_in} s")
    return Token(token.strip(), expires_in, now + expires_in - refresh_margin(expires_in))


class TokenCache:
    """One token at a time for one client, shared by its threads.

    `fetch()` performs the token request and returns the parsed Token (it raises GalleryError).
    """

    def __init__(self, fetch: Callable[[], Token], clock: Clock) -> None:
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._token: Token | None = None
        #: every token value this cache has held, so they can be redacted from texts.
        self.seen: set[str] = set()

    def get(self) -> str:
        with self._lock:  # held while fetching: concurrent callers wait for one fetch, not make many
            token = self._token
            if token is None or self._clock.time() >= token.refresh_at:
                if token is not None:
                    log.debug("access token is due for refresh; fetching a new one")
                token = self._fetch()
                self._token = token
                self.seen.add(token.value)
            return token.value

    def invalidate(self, value: str) -> None:
        """The gallery refused `value` (110/111): forget it, unless another thread already replaced it."""
        with self._lock:
            if self._token is not None and self._token.value == value:
                self._token = None
