"""Keep API keys, secret keys and access tokens out of every text imgsync shows or logs.

Foreign texts (a requests exception names the URL it called, and that URL carries `access_token=...`
in its query) pass through `redact()` at the one place where they become imgsync errors. Two rules:
every known secret value is replaced wherever it appears (raw or percent-encoded), and the value of
any `access_token=` / `client_secret=` query or form parameter is replaced even when we do not know it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

REDACTED = "<redacted>"
# A parameter value runs to the next '&', whitespace, quote or closing bracket.
_SECRET_PARAMS = re.compile(r"(?i)\b(access_token|client_secret|client_id)=([^&\s'\")\]]+)")
# Shorter values would also match ordinary words; real keys and tokens are far longer.
_MIN_SECRET_LEN = 4


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with every known secret and every access_token/client_secret/client_id value replaced."""
    values = {s for s in secrets if s and len(s) >= _MIN_SECRET_LEN}
    forms = {form for s in values for form in (s, quote(s, safe=""), quote_plus(s, safe=""))}
    # Longest first, so a secret that contains another is replaced whole.
    for value in sorted(forms, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return _SECRET_PARAMS.sub(lambda m: f"{m.group(1)}={REDACTED}", text)


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites a record's message through `redact()`.

    Installed on urllib3's connection-pool logger: at DEBUG level it logs every request line,
    query string (and so the access token) included.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is logging's problem, not ours to raise
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_installed = False


def install_log_redaction() -> None:
    """Put a RedactingFilter on the loggers of the libraries we call (idempotent)."""
    global _installed
    if _installed:
        return
    for name in ("urllib3.connectionpool", "urllib3.connection", "requests"):
        logging.getLogger(name).addFilter(RedactingFilter())
    _installed = True
