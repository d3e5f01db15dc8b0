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
        Library("product", "/rest/2.0/image-classify/v1/realtime_search/product", 300, None, 1000,
                labels="class_id"),
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
