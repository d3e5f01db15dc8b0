"""The cloud's error answers, as the local gallery gives them.

Raise ApiError(code, message) anywhere below the HTTP layer; app.py turns it into
{"error_code", "error_msg", "log_id"} (plus "cont_sign" for a duplicate add).
Codes and messages follow ../shared/reference/api.md §6.
"""

from __future__ import annotations

UNKNOWN_ERROR = 1
SERVICE_UNAVAILABLE = 2
UNSUPPORTED_METHOD = 3
NO_PERMISSION = 6
IAM_FAILED = 14
DAILY_LIMIT = 17
QPS_LIMIT = 18
TOTAL_LIMIT = 19
INVALID_PARAMETER = 100
TOKEN_INVALID = 110
TOKEN_EXPIRED = 111
INVALID_PARAM = 216100
NOT_ENOUGH_PARAM = 216101
SERVICE_NOT_SUPPORT = 216102
PARAM_TOO_LONG = 216103
EMPTY_IMAGE = 216200
IMAGE_FORMAT_ERROR = 216201
IMAGE_SIZE_ERROR = 216202
IMAGE_DECODE_ERROR = 216203
ITEM_NOT_EXIST = 216680
ITEM_EXIST = 216681
NOT_INITIALIZED = 216017  # the library was never created for this account (未建库)
INTERNAL_ERROR = 282000
URL_NOT_EXIST = 282110
URL_FORMAT_ILLEGAL = 282111
URL_DOWNLOAD_TIMEOUT = 282112
URL_RESPONSE_INVALID = 282113
URL_SIZE_ERROR = 282114

MESSAGES: dict[int, str] = {
    UNKNOWN_ERROR: "Unknown error",
    SERVICE_UNAVAILABLE: "Service temporarily unavailable",
    UNSUPPORTED_METHOD: "Unsupported openapi method",
    NO_PERMISSION: "No permission to access data",
    IAM_FAILED: "IAM Certification failed",
    DAILY_LIMIT: "Open api daily request limit reached",
    QPS_LIMIT: "Open api qps request limit reached",
    TOTAL_LIMIT: "Open api total request limit reached",
    INVALID_PARAMETER: "Invalid parameter",
    TOKEN_INVALID: "Access token invalid or no longer valid",
    TOKEN_EXPIRED: "Access token expired",
    INVALID_PARAM: "invalid param",
    NOT_ENOUGH_PARAM: "not enough param",
    SERVICE_NOT_SUPPORT: "service not support",
    PARAM_TOO_LONG: "param too long",
    EMPTY_IMAGE: "empty image",
    IMAGE_FORMAT_ERROR: "image format error",
    IMAGE_SIZE_ERROR: "image size error",
    IMAGE_DECODE_ERROR: "image size error",
    ITEM_NOT_EXIST: "item not exist",
    ITEM_EXIST: "item has existed",
    NOT_INITIALIZED: "not initialized",
    INTERNAL_ERROR: "internal error",
    URL_NOT_EXIST: "urls not exit",
    URL_FORMAT_ILLEGAL: "url format illegal",
    URL_DOWNLOAD_TIMEOUT: "url download timeout",
    URL_RESPONSE_INVALID: "url response invalid",
    URL_SIZE_ERROR: "url size error",
}


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
