"""The no-op fast path: a full reconcile of a folder that changed nothing costs about one stat walk.

After a full run that ended clean (every file stable and judged, nothing failed, pending or withheld,
nothing in the journal) the mirror records "<fingerprint>:<digest>" (mirror_state.settled): the
fingerprint of every setting the plan depends on, and scan.digest_of the files. The next full run walks
the folder computing the same digest (scan.stat_digest: no file opened, no record built); if both match,
the scan would reuse every hash and verdict and the plan would be empty, so neither is computed. Any other
run clears the mark first (Store.unsettle), so a run that dies or fails midway can never leave a stale
claim behind.

Light on purpose (no SQLAlchemy, no Pillow): the API asks it before opening the Store or the gallery.
"""

from __future__ import annotations

import hashlib

from imgsync.config import MirrorConfig
from imgsync.folder import check_folder
from imgsync.manifest.records import MirrorState
from imgsync.scan import stat_digest

#: Bump when plan rules change, so marks left by an older imgsync are not trusted.
PLAN_RULES_VERSION = 2  # 2: briefs keep undecodable file-name bytes as JSON escapes


def settled_fingerprint(mirror: MirrorConfig) -> str:
    return hashlib.sha256(f"{PLAN_RULES_VERSION}|{mirror!r}".encode("utf-8", "surrogateescape")).hexdigest()[:16]


def settled_mark(mirror: MirrorConfig, digest: str) -> str:
    return f"{settled_fingerprint(mirror)}:{digest}"


def still_settled(mirror: MirrorConfig, state: MirrorState, *, open_intents: int) -> bool:
    """Does the mark the last clean run left still vouch for the folder (same settings, same disk, no
    call in doubt, the same files by one stat walk)?"""
    fingerprint = settled_fingerprint(mirror)
    if not state.settled or not state.settled.startswith(fingerprint + ":") or open_intents:
        return False
    check = check_folder(mirror.folder, state.device, state.fsid)
    if not check.usable or check.moved:
        return False
    expect = state.settled.split(":")[1]  # the mark holds "<fingerprint>:<files>:<digest>"
    digest = stat_digest(mirror.folder, mirror, expect_files=int(expect) if expect.isdigit() else 0)
    return digest is not None and state.settled == settled_mark(mirror, digest)
