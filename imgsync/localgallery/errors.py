"""The cloud's error answers, as the local gallery gives them.

Raise ApiError(code, message) anywhere below the HTTP layer; app.py turns it into
{"error_code", "error_msg", "log_id"} (plus "cont_sign" for a duplicate add).
Codes and messages (api.md §6) have one home, imgsync.libraries, shared with the client.
"""

from __future__ import annotations

from imgsync.libraries import (  # noqa: F401 (re-exported: the codes the gallery answers with)
    DAILY_LIMIT,
    EMPTY_IMAGE,
    IAM_FAILED,
    IMAGE_DECODE_ERROR,
    IMAGE_FORMAT_ERROR,
    IMAGE_SIZE_ERROR,
    INTERNAL_ERROR,
    INVALID_PARAM,
    INVALID_PARAMETER,
    ITEM_EXIST,
    ITEM_NOT_EXIST,
    MESSAGES,
    NO_PERMISSION,
    NOT_ENOUGH_PARAM,
    NOT_INITIALIZED,
    PARAM_TOO_LONG,
    QPS_LIMIT,
    SERVICE_NOT_SUPPORT,
    SERVICE_UNAVAILABLE,
    TOKEN_EXPIRED,
    TOKEN_INVALID,
    TOTAL_LIMIT,
    UNKNOWN_ERROR,
    UNSUPPORTED_METHOD,
    URL_DOWNLOAD_TIMEOUT,
    URL_FORMAT_ILLEGAL,
    URL_NOT_EXIST,
    URL_RESPONSE_INVALID,
    URL_SIZE_ERROR,
)


class ApiError(Exception):
    """An error answer. `detail` is appended to the standard message (e.g. which param is missing)."""

    def __init__(self, code: int, detail: str | None = None, *, cont_sign: str | None = None) -> None:
        base = MESSAGES.get(code, "error")
        self.code = code
        self.message = f"{base}: {detail}" if detail else base
        self.cont_sign = cont_sign
        super().__init__(f"{code} {self.message}")

    def payload(self) -> dict[str, object]:
        out: dict[str, object] = {"error_code": self.code, "error_msg": self.message}
        if self.cont_sign is not None:
            out["cont_sign"] = self.cont_sign
        return out


def missing(param: str) -> ApiError:
    """216101 naming the parameter, exactly as the cloud words it: "param brief not exist"."""
    err = ApiError(NOT_ENOUGH_PARAM, f"param {param} not exist")
    err.message = f"param {param} not exist"
    return err
