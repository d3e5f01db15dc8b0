"""The decision table of imgsync.plan, case by case, and a property: executing a plan converges."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from imgsync.brief import render_brief
from imgsync.config import DeleteGuard, LabelRule, MirrorConfig
from imgsync.model import Entry, KnownFile, ScannedFile
from imgsync.plan import Plan, make_plan

MIRROR = MirrorConfig(name="m", folder=Path("/pics"), library="same_hq")


def scanned(path: str, h: str, verdict: str = "ok", reason: str | None = None) -> ScannedFile:
    return ScannedFile(path, 10, 1, 1, h if verdict != "error" else None, verdict, reason)


def entry(eid: int, h: str, path: str, *, mirror: MirrorConfig = MIRROR, tags=(), state="live") -> Entry:
    brief = render_brief(mirror.brief, entry_id=eid, path=path, mirror=mirror.name, library=mirror.library)
    return Entry(eid, mirror.name, mirror.library, f"{eid},{eid}", h, brief, tuple(tags), state=state)


def known(path: str, h: str, eid: int | None) -> KnownFile:
    return KnownFile(path, 10, 1, 1, h, "ok", None, eid)


def plan_for(files, kn=(), ents=(), mirror=MIRROR, **kw) -> Plan:
    return make_plan(mirror, {f.path: f for f in files}, {k.path: k for k in kn}, {e.id: e for e in ents}, **kw)


def test_new_image_is_added_once_even_at_several_paths():
    plan = plan_for([scanned("a.jpg", "h1"), scanned("copy/a.jpg", "h1"), scanned("b.jpg", "h2")])
    assert [(a.path, a.paths) for a in plan.adds] == [("a.jpg", ("a.jpg", "copy/a.jpg")), ("b.jpg", ("b.jpg",))]
    assert not (plan.updates or plan.deletes)


def test_nothing_changed_means_no_action_at_all():
    e = entry(1, "h1", "a.jpg")
    plan = plan_for([scanned("a.jpg", "h1")], [known("a.jpg", "h1", 1)], [e])
    assert plan.is_empty and plan.calls == 0


def test_moved_file_is_updated_not_reuploaded():
    e = entry(1, "h1", "old/a.jpg")
    plan = plan_for([scanned("new/a.jpg", "h1")], [known("old/a.jpg", "h1", 1)], [e])
    assert plan.adds == () and plan.deletes == ()
    (u,) = plan.updates
    assert u.entry == e and u.path == "new/a.jpg" and '"path":"new/a.jpg"' in u.brief and '"id":1' in u.brief


def test_removing_one_of_two_copies_keeps_the_entry_and_repoints_the_brief():
    e = entry(1, "h1", "a.jpg")
    plan = plan_for([scanned("b.jpg", "h1")], [known("a.jpg", "h1", 1), known("b.jpg", "h1", 1)], [e])
    assert plan.deletes == () and plan.adds == ()
    assert [u.path for u in plan.updates] == ["b.jpg"]


def test_removing_the_copy_that_is_not_named_costs_no_call():
    e = entry(1, "h1", "a.jpg")
    plan = plan_for([scanned("a.jpg", "h1")], [known("a.jpg", "h1", 1), known("b.jpg", "h1", 1)], [e])
    assert plan.calls == 0


def test_new_identical_copy_is_only_mapped_locally():
    e = entry(1, "h1", "a.jpg")
    plan = plan_for([scanned("a.jpg", "h1"), scanned("z.jpg", "h1")], [known("a.jpg", "h1", 1)], [e])
    assert plan.calls == 0
    assert [(r.entry.id, r.paths) for r in plan.remaps] == [(1, ("a.jpg", "z.jpg"))]


def test_last_path_gone_deletes_the_entry():
    e1, e2 = entry(1, "h1", "a.jpg"), entry(2, "h2", "b.jpg")
    plan = plan_for([scanned("b.jpg", "h2")], [known("a.jpg", "h1", 1), known("b.jpg", "h2", 2)], [e1, e2])
    assert [d.entry.id for d in plan.deletes] == [1]


def test_changed_content_adds_new_and_deletes_old():
    e = entry(1, "h1", "a.jpg")
    plan = plan_for([scanned("a.jpg", "h2")], [known("a.jpg", "h1", 1)], [e])
    assert [a.content_hash for a in plan.adds] == ["h2"]
    assert [d.entry.id for d in plan.deletes] == [1]


def test_tag_rule_change_is_an_update():
    m = replace(MIRROR, labels=(LabelRule("shoes/*", (7,)),))
    e = entry(1, "h1", "shoes/a.jpg", mirror=m)
    plan = plan_for([scanned("shoes/a.jpg", "h1")], [known("shoes/a.jpg", "h1", 1)], [e], mirror=m)
    assert [(u.path, u.tags) for u in plan.updates] == [("shoes/a.jpg", (7,))]


def test_clearing_every_tag_is_a_delete_then_add_because_update_cannot_clear():
    m = replace(MIRROR, labels=(LabelRule("shoes/*", (7,)),))
    e = entry(1, "h1", "shoes/a.jpg", mirror=m, tags=(7,))
    moved = plan_for([scanned("a.jpg", "h1")], [known("shoes/a.jpg", "h1", 1)], [e], mirror=m)
    assert moved.updates == () and [(r.entry.id, r.add.path, r.add.tags) for r in moved.readds] == [(1, "a.jpg", ())]
    assert moved.calls == 2 and moved.adds == () and moved.deletes == ()
    retagged = plan_for([scanned("shoes/b.jpg", "h1")], [known("shoes/a.jpg", "h1", 1)], [e], mirror=m)
    assert retagged.readds == () and [u.tags for u in retagged.updates] == [(7,)]


def test_clearing_a_product_class_id_is_a_readd():
    m = MirrorConfig(name="p", folder=Path("/p"), library="product", labels=(LabelRule("*", (), 3, None),))
    e = Entry(1, "p", "product", "1,1", "h1", '{"id":1,"path":"x.jpg"}', (), 3, 4)
    plan = plan_for([scanned("x.jpg", "h1")], [known("x.jpg", "h1", 1)], [e], mirror=m)
    assert [r.add.class_ids for r in plan.readds] == [(3, None)]


def test_brief_template_change_is_an_update():
    e = entry(1, "h1", "a.jpg")
    m = replace(MIRROR, brief="{id} {name}")
    plan = plan_for([scanned("a.jpg", "h1")], [known("a.jpg", "h1", 1)], [e], mirror=m)
    assert [u.brief for u in plan.updates] == ["1 a.jpg"]


def test_product_rules_give_class_ids():
    m = MirrorConfig(name="p", folder=Path("/p"), library="product", labels=(LabelRule("*", (), 3, 4),))
    plan = plan_for([scanned("x.jpg", "h1")], mirror=m)
    assert [(a.tags, a.class_ids) for a in plan.adds] == [((), (3, 4))]


def test_rejected_file_is_reported_and_its_old_entry_goes():
    e = entry(1, "h1", "a.jpg")
    plan = plan_for([scanned("a.jpg", "h9", "rejected", "truncated JPEG")], [known("a.jpg", "h1", 1)], [e])
    assert [(r.path, r.reason) for r in plan.rejects] == [("a.jpg", "truncated JPEG")]
    assert [d.entry.id for d in plan.deletes] == [1] and plan.adds == ()


def test_unstable_or_unreadable_file_keeps_its_entry():
    e1, e2 = entry(1, "h1", "a.jpg"), entry(2, "h2", "b.jpg")
    files = [scanned("a.jpg", "hX", "unstable", "changed while read"), scanned("b.jpg", "h2", "error", "denied")]
    plan = plan_for(files, [known("a.jpg", "h1", 1), known("b.jpg", "h2", 2)], [e1, e2])
    assert plan.is_empty
    assert [p for p, _ in plan.pending] == ["a.jpg", "b.jpg"]


def test_interrupted_delete_is_reissued():
    e = entry(1, "h1", "a.jpg", state="deleting")
    plan = plan_for([], [], [e])
    assert [d.entry.id for d in plan.deletes] == [1]


def test_incomplete_scan_withholds_deletes_even_with_force():
    e = entry(1, "h1", "a.jpg")
    plan = plan_for([], [known("a.jpg", "h1", 1)], [e], scan_complete=False, force=True)
    assert plan.deletes == () and len(plan.withheld) == 1 and "could not read" in plan.withheld_reason


def test_empty_folder_that_held_files_withholds_deletes_unless_forced():
    e = entry(1, "h1", "a.jpg")
    plan = plan_for([], [known("a.jpg", "h1", 1)], [e])
    assert plan.deletes == () and "empty" in plan.withheld_reason and plan.withheld_forceable
    forced = plan_for([], [known("a.jpg", "h1", 1)], [e], force=True)
    assert [d.entry.id for d in forced.deletes] == [1] and forced.withheld_reason is None


def test_other_device_withholds_deletes_unless_forced():
    e1, e2 = entry(1, "h1", "a.jpg"), entry(2, "h2", "b.jpg")
    kn = [known("a.jpg", "h1", 1), known("b.jpg", "h2", 2)]
    plan = plan_for([scanned("b.jpg", "h2")], kn, [e1, e2], moved_folder="folder on another device")
    assert plan.deletes == () and "another device" in plan.withheld_reason
    assert len(plan_for([scanned("b.jpg", "h2")], kn, [e1, e2], moved_folder="x", force=True).deletes) == 1


def test_max_delete_guard_default_half_when_more_than_ten():
    ents = [entry(i, f"h{i}", f"{i}.jpg") for i in range(1, 31)]
    kn = [known(f"{i}.jpg", f"h{i}", i) for i in range(1, 31)]
    keep = [scanned(f"{i}.jpg", f"h{i}") for i in range(1, 15)]  # 16 of 30 go: > half and > 10
    plan = plan_for(keep, kn, ents)
    assert plan.deletes == () and len(plan.withheld) == 16 and "max_delete" in plan.withheld_reason
    assert len(plan_for(keep, kn, ents, force=True).deletes) == 16
    keep_more = [scanned(f"{i}.jpg", f"h{i}") for i in range(1, 17)]  # 14 of 30: under half
    assert len(plan_for(keep_more, kn, ents).deletes) == 14


def test_max_delete_as_a_count():
    m = replace(MIRROR, max_delete=DeleteGuard(max_count=2))
    ents = [entry(i, f"h{i}", f"{i}.jpg", mirror=m) for i in range(1, 5)]
    kn = [known(f"{i}.jpg", f"h{i}", i) for i in range(1, 5)]
    assert plan_for([scanned("1.jpg", "h1")], kn, ents, mirror=m).deletes == ()
    assert len(plan_for([scanned("1.jpg", "h1"), scanned("2.jpg", "h2")], kn, ents, mirror=m).deletes) == 2


# ------------------------------------------------------------------------------------------ property


def simulate(
    plan: Plan,
    mirror: MirrorConfig,
    files: dict[str, ScannedFile],
    known: dict[str, KnownFile],
    entries: dict[int, Entry],
):
    """What a perfect execution records: the manifest after the plan (a file keeps its mapping unless
    an action maps it elsewhere, as Store.save_scan does)."""
    ents = dict(entries)
    mapping: dict[str, int] = {p: k.entry_id for p, k in known.items() if p in files and k.entry_id is not None}
    for r in plan.remaps:
        mapping.update({p: r.entry.id for p in r.paths})
    for u in plan.updates:
        ents[u.entry.id] = replace(
            u.entry, brief=u.brief, tags=u.tags, class_id1=u.class_ids[0], class_id2=u.class_ids[1]
        )
        mapping.update({p: u.entry.id for p in u.paths})
    for r in plan.readds:
        ents.pop(r.entry.id)
    for a in [*plan.adds, *(r.add for r in plan.readds)]:
        eid = max(ents, default=0) + 1
        brief = render_brief(mirror.brief, entry_id=eid, path=a.path, mirror=mirror.name, library=mirror.library)
        ents[eid] = Entry(
            eid, mirror.name, mirror.library, f"{eid},0", a.content_hash, brief, a.tags, a.class_ids[0], a.class_ids[1]
        )
        mapping.update({p: eid for p in a.paths})
    for d in plan.deletes:
        ents.pop(d.entry.id, None)
    mapping = {p: eid for p, eid in mapping.items() if eid in ents}
    kn = {}
    for p, f in files.items():
        kn[p] = KnownFile(p, f.size, f.mtime_ns, f.inode, f.content_hash, f.verdict, f.reason, mapping.get(p))
    return kn, ents


paths = st.sampled_from(["a.jpg", "b.jpg", "d/c.jpg", "d/e/f.png", "g.bmp", "ü ñ.jpg", "shoes/x.jpg"])
contents = st.sampled_from(["h1", "h2", "h3", "h4"])
verdicts = st.sampled_from(["ok", "ok", "ok", "rejected"])
folder_states = st.dictionaries(paths, st.tuples(contents, verdicts), max_size=7)


@settings(max_examples=300, deadline=None)
@given(states=st.lists(folder_states, min_size=1, max_size=6))
def test_any_sequence_of_folder_states_converges_and_stays_minimal(states):
    mirror = replace(MIRROR, labels=(LabelRule("shoes/*", (5,)),), max_delete=DeleteGuard(max_count=10**6))
    kn: dict[str, KnownFile] = {}
    ents: dict[int, Entry] = {}
    for state in states:
        files = {p: scanned(p, h, v, "bad" if v == "rejected" else None) for p, (h, v) in state.items()}
        plan = make_plan(mirror, files, kn, ents, force=True)
        wanted = {f.content_hash for f in files.values() if f.verdict == "ok"}
        had = {e.content_hash for e in ents.values()}
        assert sorted(a.content_hash for a in plan.adds) == sorted(wanted - had)  # one upload per new image
        assert {d.entry.content_hash for d in plan.deletes} == had - wanted  # never delete what is wanted
        kn, ents = simulate(plan, mirror, files, kn, ents)
        assert sorted(e.content_hash for e in ents.values()) == sorted(wanted)  # library == folder
        again = make_plan(mirror, files, kn, ents, force=True)
        assert again.is_empty, again  # and the next run makes no call


def test_library_change_moves_every_entry():
    e = entry(1, "h1", "a.jpg")
    m = replace(MIRROR, library="similar")
    plan = plan_for([scanned("a.jpg", "h1")], [known("a.jpg", "h1", 1)], [e], mirror=m)
    assert [d.entry.id for d in plan.deletes] == [1] and [a.path for a in plan.adds] == ["a.jpg"]
