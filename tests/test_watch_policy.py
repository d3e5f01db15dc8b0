"""The daemon's decisions after a run (watch/policy.py): a table of reports in, verdicts out. Pure."""

from __future__ import annotations

import pytest

from imgsync.errors import GalleryAuthError, GalleryPermissionError, GalleryQuotaError, GalleryUnavailableError
from imgsync.report import Report
from imgsync.watch.policy import after_run, gallery_backoff_base, is_young


def report(**kw) -> Report:
    r = Report("m")
    for k, v in kw.items():
        setattr(r, k, v)
    return r


@pytest.mark.parametrize(
    ("kw", "action"),
    [
        ({"interrupted": True, "stopped": GalleryQuotaError("q")}, "requeue"),  # stopping wins: nothing else
        ({"folder_problem": "folder x does not exist", "stopped": GalleryQuotaError("q")}, "pause_folder"),
        ({"stopped": GalleryUnavailableError("down")}, "hold_gallery"),
        ({"added": ["a.jpg"]}, "finish"),
        ({"withheld_reason": "emptied", "withheld": 3}, "finish"),
    ],
)
def test_what_comes_first(kw, action):
    assert after_run(report(**kw), young=set(), told={}).action == action


def test_finish_retries_pending_failed_and_young_rejections_in_that_order():
    r = report(
        pending=[("p.jpg", "still being written")],
        failed=[("f.jpg", "unreadable")],
        rejected=[("young.jpg", "truncated JPEG"), ("old.jpg", "not an image")],
    )
    v = after_run(r, young={"young.jpg"}, told={})
    assert v.retry == ("p.jpg", "f.jpg", "young.jpg")
    assert v.tell == (("old.jpg", "not an image"),) and v.quiet == (("young.jpg", "truncated JPEG"),)
    assert v.failed == (("f.jpg", "unreadable"),) and v.changed


def test_a_rejection_is_told_once_per_reason():
    r = report(rejected=[("x.jpg", "not an image")])
    assert after_run(r, young=set(), told={"x.jpg": "not an image"}).tell == ()
    assert not after_run(r, young=set(), told={"x.jpg": "not an image"}).changed  # nothing new: no INFO line
    assert after_run(r, young=set(), told={"x.jpg": "too small"}).tell == (("x.jpg", "not an image"),)


def test_the_withheld_reason_becomes_the_mirrors_note():
    assert after_run(report(withheld_reason="emptied"), young=set(), told={}).note == "emptied"


@pytest.mark.parametrize(
    ("error", "base"),
    [
        (GalleryQuotaError("daily"), 300.0),
        (GalleryAuthError("key"), 60.0),
        (GalleryPermissionError("not enabled"), 60.0),
        (GalleryUnavailableError("down"), None),
    ],
)
def test_quota_and_auth_are_asked_less_often(error, base):
    assert gallery_backoff_base(error) == base


def test_young():
    assert is_young(100.0, 120.0) and not is_young(100.0, 131.0) and not is_young(None, 0.0)
