"""Every error imgsync raises, with the exit code the command line turns it into.

One tree, one top-level handler (imgsync.cli.main), as borg does it::

    ImgsyncError                      exit 1   str(e) is shown as "Error: ..."
    ├── UsageError                    exit 2   bad command-line input
    ├── ConfigError                   exit 2   bad or missing config key (the message names the key)
    │   ├── GalleryChangedError       exit 2   the config points at another gallery than the manifest's entries
    │   └── GalleryNotInstalledError  exit 2   the local gallery is needed but imgsync[gallery] is not installed
    ├── ManifestError                 exit 8   manifest unreadable, schema newer than this imgsync, ...
    │   └── DiskFullError             exit 8   no space left where the state dir lives (nothing is lost)
    ├── LockHeldError                 exit 7   another reconcile/watch holds the state dir
    ├── DeletesRefusedError           exit 6   a safety guard withheld deletes (missing/moved/empty folder, max_delete)
    └── GalleryError                  exit 3   .code = the gallery's error_code (int or str) or None
        ├── GalleryUnavailableError   exit 3   network down, timeout, 5xx, codes 1/2/4/282000: transient
        │   └── GalleryRateError      exit 3   code 18: QPS over the limit: slow down and retry
        ├── GalleryAuthError          exit 4   bad key/secret (invalid_client), token 100/110/111, IAM 14
        │   └── GalleryPermissionError exit 4  code 6 / 216017: the library is not enabled or not created
        ├── GalleryQuotaError         exit 5   codes 17 (daily) / 19 (total): stop calls until the quota resets
        └── GalleryRequestError       exit 1   this one request was refused; the run goes on
            ├── GalleryRejectedError           the input was refused (216100/216101/2162xx/2821xx/...)
            ├── GalleryDuplicateError          216681: the image is already there; .cont_sign if the answer had it
            └── GalleryNotFoundError           216680: no such entry

Messages never contain API keys, secrets or tokens: the client redacts them at its one boundary.
"""

from __future__ import annotations


class ImgsyncError(Exception):
    exit_code = 1


class UsageError(ImgsyncError):
    exit_code = 2


class ConfigError(ImgsyncError):
    exit_code = 2


class GalleryChangedError(ConfigError):
    """The manifest's entries live in another gallery than the configured one (see pipeline.bind_gallery)."""


class GalleryNotInstalledError(ConfigError):
    """The local gallery (the default endpoint, `gallery serve`, `gallery ls`) is needed, but this is a light
    install without its packages (see imgsync.gallery.extra)."""


class ManifestError(ImgsyncError):
    exit_code = 8


class DiskFullError(ManifestError):
    """The file system of the state dir (manifest, spool, embedded gallery) is full or over quota. Every
    write is a transaction or a whole file, so nothing is lost: free space and run again."""


#: errno values that mean "no room to write": full file system, quota exceeded.
DISK_FULL_ERRNOS = frozenset({28, 122})  # ENOSPC, EDQUOT (Linux)


def disk_full(where: object, what: str = "") -> DiskFullError:
    return DiskFullError(
        f"no space left on the file system of {where}{f' ({what})' if what else ''}; "
        "nothing was lost: free some space and run again"
    )


class LockHeldError(ImgsyncError):
    exit_code = 7


class DeletesRefusedError(ImgsyncError):
    exit_code = 6


class GalleryError(ImgsyncError):
    exit_code = 3

    def __init__(self, message: str, *, code: int | str | None = None) -> None:
        super().__init__(message)
        self.code = code


class GalleryUnavailableError(GalleryError):
    """Transient: worth retrying later."""


class GalleryRateError(GalleryUnavailableError):
    """Over the QPS limit (error 18)."""


class GalleryAuthError(GalleryError):
    exit_code = 4


class GalleryPermissionError(GalleryAuthError):
    """The account may not use this library (error 6) or the library was never created (216017)."""


class GalleryQuotaError(GalleryError):
    exit_code = 5


class GalleryRequestError(GalleryError):
    """This one request was refused; others may succeed."""

    exit_code = 1


class GalleryRejectedError(GalleryRequestError):
    pass


class GalleryDuplicateError(GalleryRequestError):
    def __init__(self, message: str, *, code: int | str | None = 216681, cont_sign: str | None = None) -> None:
        super().__init__(message, code=code)
        self.cont_sign = cont_sign


class GalleryNotFoundError(GalleryRequestError):
    pass


#: Exit codes, for the README and `--help`.
EXIT_CODES = {
    0: "all done",
    1: "done, but some files were rejected, failed or still being written (each is named)",
    2: "usage or config error",
    3: "gallery unreachable or failing (transient; run again later)",
    4: "gallery refused the credentials or the library is not enabled",
    5: "gallery quota exhausted (daily or total)",
    6: "deletes withheld by a safety guard: folder missing, on another disk, emptied, ... (see --force)",
    7: "another imgsync holds the state-dir lock",
    8: "manifest error, or no space left for the state dir",
}
