"""The five gallery libraries: their wire paths and their limits, as plain data.

One table, read by the client (which path to call, how many cont_signs a batch delete may carry),
by the scanner (what to check before an upload) and by the local gallery (what to refuse).
Sources: ../shared/reference/api.md §1 and §4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Formats every library accepts, as Pillow names them.
ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "BMP"})
#: The cloud's limit on the base64 text of an image (documented as "≤ 4M" after base64 and urlencode).
MAX_IMAGE_BASE64 = 4 * 1024 * 1024
#: Longest side, every library.
MAX_SIDE = 4096
#: brief, every library.
MAX_BRIEF_BYTES = 256
#: Paging: results returned when `rn` is not given, and the most a search can ever reach.
DEFAULT_RN = 300
MAX_RESULTS = 1000
#: tags: at most two integers in this range.
MAX_TAGS = 2
TAG_RANGE = (1, 65535)
#: url inputs: at most this many bytes.
MAX_URL_BYTES = 1024

Operation = Literal["add", "search", "update", "delete"]
OPERATIONS: tuple[Operation, ...] = ("add", "search", "update", "delete")


@dataclass(frozen=True, slots=True)
class Library:
    name: str
    #: path without the trailing "/add", "/search", ...
    base_path: str
    min_side: int
    #: largest long/short side ratio, or None when the library has no aspect limit.
    max_aspect: float | None
    #: most cont_signs one batch delete may carry.
    batch_delete_max: int
    #: "tags" (tags + tag_logic) or "class_id" (product: class_id1 / class_id2, no tag_logic).
    labels: Literal["tags", "class_id"] = "tags"
    max_side: int = MAX_SIDE

    def path(self, op: Operation) -> str:
        return f"{self.base_path}/{op}"


LIBRARIES: dict[str, Library] = {
    lib.name: lib
    for lib in (
        Library("same_hq", "/rest/2.0/realtime_search/same_hq", 50, None, 1000),
        Library("similar", "/rest/2.0/image-classify/v1/realtime_search/similar", 50, None, 1000),
        Library("product", "/rest/2.0/image-classify/v1/realtime_search/product", 300, None, 1000, labels="class_id"),
        Library("picturebook", "/rest/2.0/imagesearch/v1/realtime_search/picturebook", 150, 10.0, 100),
        # materiel's batch cap is unconfirmed; we assume the picture-book's smaller cap to stay safe.
        Library("materiel", "/rest/2.0/image-classify/v1/realtime_search/materiel", 50, 20.0, 100),
    )
}

TOKEN_PATH = "/oauth/2.0/token"

#: The library a folder is mirrored into, and searched, when nothing names one.
DEFAULT_LIBRARY = "same_hq"


def get_library(name: str) -> Library:
    """The library called `name`; KeyError names the known ones."""
    try:
        return LIBRARIES[name]
    except KeyError:
        raise KeyError(f"unknown library {name!r} (known: {', '.join(LIBRARIES)})") from None


def route_table() -> dict[str, tuple[Library, Operation]]:
    """Every API path → (library, operation)."""
    return {lib.path(op): (lib, op) for lib in LIBRARIES.values() for op in OPERATIONS}


# --- error codes: the cloud's answers (api.md §6), as the local gallery gives them and the client reads them

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

#: The standard error_msg of each code.
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
