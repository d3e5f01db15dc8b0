"""What imgsync's two HTTP servers, the local gallery and the console, share about waitress."""

from __future__ import annotations

import logging


def quiet_queue_warnings() -> None:
    """waitress logs a WARNING "Task queue depth is N" for each request that waits for a free worker
    thread. Both servers bound their threads on purpose (a gallery's CPU is the limit, not its threads):
    a request waiting its turn is how they work under load, not a fault, and a sync with more calls in
    flight than threads, or a console page of thumbnails, would print a line per request. Their errors
    still show."""
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
