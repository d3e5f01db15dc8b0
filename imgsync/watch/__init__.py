"""`imgsync watch`: keep mirrors in step as files change, in the background.

debounce.py   the pure state machine: events + time in, due paths / full scans / next wakeup out
events.py     the watchdog adapter: events → Change records; overflow and inotify limits reported
daemon.py     the loop: wakes on due work, timers and signals; calls pipeline.reconcile_mirror
policy.py     what the loop does after a run (requeue, pause, hold the gallery, retry), as pure decisions
process.py    the loop as a process: signals, systemd watchdog pings, the stop deadline, journald logging
notify.py     systemd's notify protocol (READY / STATUS / WATCHDOG / STOPPING), by hand
statusfile.py <state_dir>/daemon.json, read by `imgsync status`
service.py    the systemd user unit that ships in this package (imgsync.service)
"""

from __future__ import annotations

from imgsync.config import WatchConfig
from imgsync.watch.debounce import Timing


def timing_from(config: WatchConfig) -> Timing:
    """The daemon's Timing from the config's [watch] table."""
    return Timing(
        quiet=config.debounce,
        delete_quiet=config.delete_delay,
        max_delay=config.max_delay,
        min_age=config.min_age,
        full_scan_interval=config.full_scan_interval,
        fallback_scan_interval=config.fallback_scan_interval,
    )
