"""Comparisons across sessions and treatments: deltas, statements, the CSV and the offline HTML."""

from __future__ import annotations

import csv
import json
import re
import stat
from pathlib import Path

import pytest
from plotly.offline import get_plotlyjs
from test_store import BASE_VALUES, make_session, one_line_error, run

from movement.clinic import compare, store

BASE = {**BASE_VALUES, "raise": (4.1, 2.0)}
TWO_WEEK = {"frown": (1.0, 0.9), "raise": (1.2, 1.0), "squint": (2.2, 1.1), "eee": (2.4, 1.1),
            "smile": (5.9, 3.8)}  # fmt: skip


@pytest.fixture
def clinic(tmp_path: Path) -> Path:
    """One patient: baseline, Botox the same day, review at two weeks."""
    st = tmp_path / "st"
    store.record_session(st, make_session(tmp_path, "w0", BASE), "p1", "baseline", "2026-01-05")
    store.record_session(st, make_session(tmp_path, "w2", TWO_WEEK), "p1", "2-week", "2026-01-19")
    store.record_treatment(st, "p1", "2026-01-05", [
        store.TreatmentRow("Botox", "frontalis", "right", 6, "F1"),
        store.TreatmentRow("Botox", "frontalis", "left", 4),
        store.TreatmentRow("Botox", "corrugator_procerus", "midline", 10),
        store.TreatmentRow("Botox", "corrugator_procerus", "right", 4),
        store.TreatmentRow("Botox", "corrugator_procerus", "left", 4),
    ])  # fmt: skip
    return st


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_two_sessions_and_a_treatment(clinic, tmp_path):
    out = tmp_path / "cmp"
    cmp = compare.compare(clinic, "p1", out)
    assert [s.label for s in cmp.sessions] == ["baseline", "2-week"]
    assert cmp.baseline.label == "baseline" and cmp.latest.label == "2-week"
    st = {g.muscle_group: g.statement for g in cmp.groups}
    assert st["frontalis"] == (
        "right frontalis: 4.1 → 1.2 mm (−71 %), left 2.0 → 1.0 mm (−50 %), "
        "14 days after 6 U right / 4 U left (Botox, 2026-01-05); now balanced"
    )
    assert st["corrugator_procerus"] == (
        "right corrugator procerus: 2.9 → 1.0 mm (−66 %), "
        "left 1.4 → 0.9 mm (−36 %, within measurement variation), "
        "14 days after 4 U right / 4 U left / 10 U midline (Botox, 2026-01-05); now balanced"
    )
    assert st["platysma"] == (
        "left platysma: 3.2 → 1.1 mm (−66 %), right 1.7 → 2.4 mm (+41 %), "
        "with no platysma treatment recorded; now right-dominant (was left)"
    )
    assert st["zygomaticus"].endswith("no zygomaticus treatment recorded; still right-dominant")
    assert "(±0 %)" in st["zygomaticus"]

    rows = _rows(out / "comparison.csv")
    assert list(rows[0]) == compare.COMPARISON_COLUMNS
    assert len(rows) == 2 * 5
    f = {r["label"]: r for r in rows if r["muscle_group"] == "frontalis"}
    assert f["baseline"]["statement"] == "baseline" and f["baseline"]["right_change_mm"] == "0.000"
    two = f["2-week"]
    assert (two["right_mm"], two["left_mm"]) == ("1.200", "1.000")
    assert (two["right_change_mm"], two["right_change_pct"]) == ("-2.900", "-70.7")
    assert (two["left_change_mm"], two["left_change_pct"]) == ("-1.000", "-50.0")
    assert two["repeat_mm"] == "0.26"  # the raise's: both changes are beyond it
    assert two["asymmetry_index_change"] == f"{(0.2 / 2.2) - (2.1 / 6.1):.3f}"
    assert (two["days_since_treatment"], two["group_last_treated"]) == ("14", "2026-01-05")
    assert (two["units_right"], two["units_left"], two["units_midline"]) == ("6.0", "4.0", "")
    assert two["products"] == "Botox" and two["statement"] == st["frontalis"]
    # Same-day treatment counts as after the baseline video.
    assert f["baseline"]["days_since_treatment"] == "" and f["baseline"]["units_right"] == ""


def test_comparison_html_is_self_contained(clinic, tmp_path):
    out = tmp_path / "cmp"
    compare.compare(clinic, "p1", out)
    page = (out / "comparison.html").read_text(encoding="utf-8")
    # plotly.js inlined exactly once; one figure per group plus the index overview.
    assert page.count("<script") == 1 + 6
    assert len(re.findall(r"plotly\.js v\d", page)) == 1
    assert page.count("Plotly.newPlot") == 6
    assert not re.search(r"<(script|img|link|iframe)[^>]+(src|href)=[\"']?(https?:)?//", page)
    # Outside the plotly.js bundle (whose code mentions plotly.com), no URL at all.
    ours = page.replace(get_plotlyjs(), "")
    assert len(ours) < len(page) / 2
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*([a-z]+:)?//", ours, re.I)
    assert not re.search(r"https?:", ours)
    hrefs = re.findall(r"href=\"([^\"]*)\"", ours)
    assert hrefs and all(not h.startswith(("http", "//", "/")) for h in hrefs)
    assert (out / hrefs[0]).resolve() == (tmp_path / "w0" / "report.html").resolve()
    assert "4.1 → 1.2 mm (−71 %)" in page
    assert not list(tmp_path.glob(".cmp.*")), "temporary folder left behind"


def test_free_text_is_escaped_everywhere(tmp_path):
    st = tmp_path / "st"
    pid = "<script>alert('p')</script>"
    label = "<img src=//evil.example/x.png>"
    store.record_session(st, make_session(tmp_path, "a"), pid, label, "2026-01-05")
    store.record_session(st, make_session(tmp_path, "b"), pid, "</script>", "2026-01-19")
    store.record_treatment(st, pid, "2026-01-05",
                           [store.TreatmentRow("<b>Bo</b>", "frontalis", "left", 2)])  # fmt: skip
    compare.compare(st, pid, tmp_path / "cmp")
    page = (tmp_path / "cmp" / "comparison.html").read_text()
    assert "<script>alert" not in page and "<img src=//evil" not in page and "<b>Bo</b>" not in page
    assert page.count("</script>") == page.count("<script")


def test_choose_sessions_and_baseline(clinic, tmp_path):
    store.record_session(clinic, make_session(tmp_path, "m4", BASE), "p1", "4-month",
                         "2026-05-04")  # fmt: skip
    hist = store.history(clinic, "p1")
    cmp = compare.build(hist)
    assert [s.label for s in cmp.sessions] == ["baseline", "2-week", "4-month"]
    assert cmp.latest.label == "4-month"
    fr = [g for g in cmp.groups if g.muscle_group == "frontalis"][0]
    # 4 months after the toxin: back to baseline, and the statement names the last treatment.
    assert fr.statement == (
        "right frontalis: 4.1 → 4.1 mm (±0 %), left 2.0 → 2.0 mm (±0 %), "
        "119 days after 6 U right / 4 U left (Botox, 2026-01-05); still right-dominant"
    )
    cmp = compare.build(hist, ["2-week", "2026-05-04"], baseline="2-week")
    assert [s.label for s in cmp.sessions] == ["2-week", "4-month"]
    assert cmp.baseline.label == "2-week"
    ids = [s.id for s in hist.sessions]
    cmp = compare.build(hist, [str(ids[2])], baseline=str(ids[0]))
    assert [s.id for s in cmp.sessions] == [ids[0], ids[2]]
    with pytest.raises(store.InputError, match="no session 'nope'"):
        compare.build(hist, ["nope"])
    with pytest.raises(store.StoreError, match="need at least 2"):
        compare.build(hist, ["2-week"])


def test_ambiguous_label_asks_for_an_id(clinic, tmp_path):
    store.record_session(clinic, make_session(tmp_path, "x", BASE), "p1", "2-week", "2026-05-18")
    with pytest.raises(store.InputError, match="use a session id"):
        compare.build(store.history(clinic, "p1"), baseline="2-week")


def test_statement_cases(tmp_path):
    st = tmp_path / "st"
    base = {"raise": (4.0, 4.0), "smile": (0.1, 0.05), "eee": (3.0, 1.0), "frown": (2.0, 2.0)}
    now = {"raise": None, "smile": (0.5, 0.4), "eee": (3.0, 1.0), "frown": (2.0, 2.1)}
    store.record_session(st, make_session(tmp_path, "a", base), "p", "", "2026-01-05")
    store.record_session(st, make_session(tmp_path, "b", now, quality={
        "frown": ("low", "head turned 25 degrees")}), "p", "", "2026-02-05")  # fmt: skip
    cmp = compare.build(store.history(st, "p"))
    s = {g.muscle_group: g.statement for g in cmp.groups}
    assert s["frontalis"] == "frontalis: not measured on 2026-02-05 (step not found in the video)"
    # A baseline too small to divide by: the change is given in mm.
    assert s["zygomaticus"].startswith("right zygomaticus: 0.1 → 0.5 mm (+0.4 mm), left 0.1")
    assert s["platysma"].endswith("still right-dominant")
    assert s["corrugator_procerus"].endswith(
        "still balanced (low quality: head turned 25 degrees)"
    )


def _row(r: float, lft: float, dominant: str, half: float | None = None) -> dict:
    """An asymmetry row as the store gives it; with ``half``, each side's 95 % interval."""
    row = dict(right_mm=r, left_mm=lft, dominant_side=dominant, quality="ok", reason="",
               asymmetry_index=(r - lft) / (r + lft))
    if half is not None:
        row.update(right_lo=r - half, right_hi=r + half, left_lo=lft - half,
                   left_hi=lft + half)
    return row


def test_an_uncertain_call_is_said_and_is_not_a_change_of_dominance(clinic):
    cmp = compare.build(store.history(clinic, "p1"))
    g = next(x for x in cmp.groups if x.muscle_group == "platysma")
    text = compare.statement(g, _row(3.0, 1.98, "uncertain", 0.3), _row(3.0, 2.05, "balanced",
                             0.3), cmp.baseline, cmp.latest, cmp.treatments)
    assert text.endswith("now balanced (was uncertain)")
    text = compare.statement(g, _row(3.0, 1.0, "right", 0.3), _row(3.0, 2.05, "uncertain", 0.3),
                             cmp.baseline, cmp.latest, cmp.treatments)
    assert text.endswith("which side dominates is uncertain now (was right)")


def test_a_change_is_judged_against_both_visits_intervals(clinic):
    cmp = compare.build(store.history(clinic, "p1"))
    g = next(x for x in cmp.groups if x.muscle_group == "zygomaticus")
    assert g.repeat_mm == pytest.approx(0.39)  # the smile's, when no interval is stored
    # 0.5 mm lower on each side: beyond repeat_mm, but within wide intervals ...
    wide = compare.statement(g, _row(4.0, 3.0, "balanced", 0.5), _row(3.5, 2.5, "balanced", 0.5),
                             cmp.baseline, cmp.latest, cmp.treatments)
    assert wide.count("within measurement variation") == 2
    assert "(−12 %; 95 % −1.2 to +0.2 mm, within measurement variation)" in wide
    # ... and beyond narrow ones.
    narrow = compare.statement(g, _row(4.0, 3.0, "balanced", 0.1),
                               _row(3.5, 2.5, "balanced", 0.1), cmp.baseline, cmp.latest,
                               cmp.treatments)
    assert "within measurement variation" not in narrow
    assert compare.side_change(g, "right", _row(4.0, 3.0, "balanced"),
                               _row(3.5, 2.5, "balanced"))[0] is True  # 0.5 >= 0.39


def test_the_summary_reads_treated_then_changed_then_one_line(clinic):
    cmp = compare.build(store.history(clinic, "p1"))
    lines = compare.summary(cmp)
    # Treated first (the corrugators and frontalis, Botox on the baseline's day) ...
    assert lines[0].startswith("right corrugator procerus: 2.9 → 1.0 mm (−66 %)")
    assert lines[1].startswith("right frontalis: 4.1 → 1.2 mm (−71 %)")
    assert "after 6 U right / 4 U left" in lines[1]
    # ... then the untreated change beyond the variation, without a treatment phrase ...
    assert lines[2] == ("left platysma: 3.2 → 1.1 mm (−66 %), right 1.7 → 2.4 mm (+41 %); "
                        "now right-dominant (was left)")
    # ... then one line for everything unchanged.
    assert lines[3:] == ["Unchanged within the measurement's variation: orbicularis oculi, "
                         "zygomaticus."]


def test_no_percentage_of_a_value_near_zero_or_not_in_mm():
    assert compare.change(0.4, -0.9, "crease") == (pytest.approx(-1.3), None)
    assert compare.change(0.5, 0.25) == (pytest.approx(-0.25), None)  # under 1 mm
    assert compare.change(4.0, 1.0) == (pytest.approx(-3.0), pytest.approx(-75.0))


def test_update_comparison_follows_the_store(clinic, tmp_path):
    link = compare.update_comparison(clinic, "p1")
    assert link == store.session_link(clinic, "p1") == compare.update_comparison(clinic, "p1")
    assert stat.S_IMODE(link.parent.stat().st_mode) == 0o700
    before = link.read_text()
    assert "12 U right" not in before
    store.record_treatment(clinic, "p1", "2026-01-12",
                           [store.TreatmentRow("Dysport", "frontalis", "right", 12)])  # fmt: skip
    compare.update_comparison(clinic, "p1")
    after = link.read_text()
    assert "7 days after 12 U right (Dysport, 2026-01-12)" in after
    assert sorted(p.name for p in link.parent.iterdir()) == ["comparison.csv", "comparison.html"]
    assert sorted(p.name for p in link.parent.parent.iterdir()) == [".lock", link.parent.name]


def test_compare_never_replaces_a_folder_with_other_files(clinic, tmp_path):
    session = tmp_path / "w0"
    with pytest.raises(store.OutputFolderError, match="holds other files"):
        compare.compare(clinic, "p1", session)
    assert (session / "session.json").exists()
    with pytest.raises(store.OutputFolderError):
        compare.compare(clinic, "p1", clinic)  # the store itself
    assert (clinic / store.DB_NAME).exists()
    out = tmp_path / "cmp"
    compare.compare(clinic, "p1", out)
    compare.compare(clinic, "p1", out)  # a previous comparison is replaced
    assert sorted(p.name for p in out.iterdir()) == ["comparison.csv", "comparison.html"]


def test_cli_compare(clinic, tmp_path):
    out = tmp_path / "cmp"
    res = run("compare", "p1", "--out", str(out), "--store", str(clinic))
    assert res.exit_code == 0, res.output
    assert "right frontalis: 4.1 → 1.2 mm (−71 %)" in res.output
    assert (out / "comparison.html").exists()
    res = run("compare", "p1", "--sessions", "baseline,2-week", "--baseline", "2-week",
              "--out", str(tmp_path / "c2"), "--store", str(clinic))  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "baseline 2026-01-19" in res.output
    one_line_error(run("compare", "p1", "--sessions", "1", "--out", str(tmp_path / "c3"),
                       "--store", str(clinic)), 7, "need at least 2")  # fmt: skip
    one_line_error(run("compare", "p1", "--baseline", "x", "--out", str(tmp_path / "c3"),
                       "--store", str(clinic)), 2, "no session 'x'")  # fmt: skip
    one_line_error(run("compare", "p1", "--out", str(tmp_path / "w0"), "--store", str(clinic)),
                   6, "holds other files")  # fmt: skip
    assert not (tmp_path / "c3").exists()


def _record_and_compare(args: tuple[str, list[str], list[str]]) -> None:
    st, folders, dates = args
    for f, d in zip(folders, dates, strict=True):
        store.record_session(st, Path(f), "p1", "", d)
        compare.update_comparison(st, "p1")  # what analyze does after each session


def test_concurrent_analyses_leave_the_newest_comparison(tmp_path):
    """Four analyze runs at once: the comparison written last includes every session."""
    import multiprocessing

    st = tmp_path / "st"
    jobs = []
    for w in range(4):
        folders = [str(make_session(tmp_path, f"w{w}s{i}")) for i in range(2)]
        jobs.append((str(st), folders, [f"2026-0{w + 1}-{10 + i}" for i in range(2)]))
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_record_and_compare, jobs)
    link = store.session_link(st, "p1")
    rows = _rows(link.parent / "comparison.csv")
    assert len({r["session_id"] for r in rows}) == 8
    assert not [p for p in link.parent.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_changes_smaller_than_two_recordings_differ_are_marked(clinic, tmp_path, monkeypatch):
    # The frown reads 0.59 mm apart between two recordings of one movement (the
    # protocol's repeat_mm): its left 1.4 -> 0.9 mm is within that, its right
    # 2.9 -> 1.0 mm and the raise's 2.0 -> 1.0 mm are not.
    cmp = compare.compare(clinic, "p1", tmp_path / "cmp")
    g = {x.muscle_group: x for x in cmp.groups}
    assert g["corrugator_procerus"].repeat_mm == pytest.approx(0.59)
    assert "left 1.4 → 0.9 mm (−36 %, within measurement variation)" in g[
        "corrugator_procerus"].statement
    assert "within" not in g["frontalis"].statement
    page = (tmp_path / "cmp" / compare.COMPARISON_FILE).read_text(encoding="utf-8")
    marked = re.findall(r"<td class='ch same' title='([^']*)'>≈ ([^<]*)</td>", page)
    # The unchanged smile and squint are within it too.
    assert sorted(m[1] for m in marked) == ["±0.00 mm (±0 %)"] * 4 + ["−0.50 mm (−36 %)"]
    assert any("0.59 mm two recordings" in m[0] for m in marked)
    # A change beyond it says which rule judged it (these sessions carry no intervals).
    assert ("<td class='ch down' title='at least the 0.26 mm two recordings of the same "
            "movement can read apart (a session stored without intervals)'>−2.90 mm (−71 %)"
            "</td>") in page
    # A protocol that is no longer installed gives no figure: changes stay unmarked.
    def gone(name):
        raise compare.ProtocolError(f"protocol '{name}' not found")

    monkeypatch.setattr(compare, "load_protocol", gone)
    cmp = compare.compare(clinic, "p1", tmp_path / "cmp2")
    assert all(x.repeat_mm is None for x in cmp.groups)
    assert not any("within" in x.statement for x in cmp.groups)
    assert "class='ch same'" not in (tmp_path / "cmp2" / compare.COMPARISON_FILE).read_text(
        encoding="utf-8")


def _with_pose(folder: Path, yaw: float | None) -> Path:
    meta = json.loads((folder / "session.json").read_text())
    for st in meta["steps"]:
        st["pose"] = None if yaw is None else {"rest_yaw_deg": yaw, "rest_pitch_deg": -1.0}
    for c in meta["clips"]:
        c["steps"] = meta["steps"]
    (folder / "session.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.parametrize(("base", "now", "said"), [
    ((0.0, 0.0), (3.0, -4.0), ""),
    ((-2.0, 1.0), (-9.0, 1.0), "turned 7° more to the patient's right than at baseline; "
                               "both read face-on"),
    ((0.0, 2.0), (1.0, -10.0), "filmed 12° more chin-down than at baseline; read face-on, "
                               "but beyond the 10° the correction is checked for: part of "
                               "the change may be the pose's"),
    ((0.0, -3.0), (6.0, 3.0), "turned 6° more to the patient's left and filmed 6° more "
                              "chin-up than at baseline; both read face-on"),
])
def test_a_pose_difference_is_said_in_words(base, now, said):
    assert compare.pose_difference(base, now) == said


def test_a_change_of_head_pose_is_said(tmp_path):
    st = tmp_path / "store"
    store.record_session(st, _with_pose(make_session(tmp_path, "a"), -1.0), "p1", "baseline",
                         "2026-01-05")
    store.record_session(st, _with_pose(make_session(tmp_path, "b", video="b"), 12.0), "p1",
                         "2-week", "2026-01-19")
    cmp = compare.build(store.history(st, "p1"))
    frown = next(g for g in cmp.groups if g.step == "frown")
    assert ("turned 13° more to the patient's left than at baseline; read face-on, but "
            "beyond the 10° the correction is checked for") in frown.statement
    assert not any("without the head-pose correction" in n for n in cmp.notes)
    # A session read before the correction existed is named.
    store.record_session(st, _with_pose(make_session(tmp_path, "c", video="c"), None), "p1",
                         "4-week", "2026-02-02")
    cmp = compare.build(store.history(st, "p1"))
    assert any("without the head-pose correction" in n and "2026-02-02" in n for n in cmp.notes)


def test_stored_intervals_judge_the_change(tmp_path):
    """Two visits stored with intervals are judged against both; a visit stored without
    them falls back to repeat_mm, and the CSV and the page say which rule judged."""
    st = tmp_path / "st"
    # Narrow intervals (±0.1 mm): the smile's right 0.3 mm drop is within its
    # repeat_mm (0.39) but beyond both intervals. Wide ones on the frown (±0.5 mm, a
    # shaky hold): its left 0.65 mm drop is beyond its repeat_mm (0.59) but within them.
    base = {**BASE_VALUES, "smile": (5.9, 3.8), "frown": (2.9, 2.1)}
    now = {**BASE_VALUES, "smile": (5.6, 3.8), "frown": (2.9, 1.45)}
    for name, values, date in (("w0", base, "2026-01-05"), ("w2", now, "2026-01-19")):
        folder = make_session(tmp_path, name, values, half=0.1)
        with (folder / "asymmetry.csv").open(encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        for r in rows:
            if r["step"] == "frown":
                for side in ("right", "left"):
                    v = float(r[f"{side}_mm"])
                    r[f"{side}_lo"], r[f"{side}_hi"] = f"{v - 0.5:.3f}", f"{v + 0.5:.3f}"
        with (folder / "asymmetry.csv").open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, list(rows[0]), lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
        store.record_session(st, folder, "p1", name, date)
    cmp = compare.compare(st, "p1", tmp_path / "cmp")
    g = {x.muscle_group: x for x in cmp.groups}
    assert g["zygomaticus"].repeat_mm == pytest.approx(0.39)
    assert g["corrugator_procerus"].repeat_mm == pytest.approx(0.59)
    smile, frown = g["zygomaticus"].statement, g["corrugator_procerus"].statement
    assert "right zygomaticus: 5.9 → 5.6 mm (−5 %; 95 % −0.4 to −0.2 mm)" in smile
    assert ("left 2.1 → 1.4 mm (−31 %; 95 % −1.4 to +0.1 mm, within measurement variation)"
            in frown)
    assert not cmp.notes  # every session carries intervals
    rows = [r for r in _rows(tmp_path / "cmp" / compare.CSV_FILE) if r["label"] == "w2"]
    assert {r["change_rule"] for r in rows} == {"intervals"}
    page = (tmp_path / "cmp" / compare.COMPARISON_FILE).read_text(encoding="utf-8")
    assert re.search(r"<td class='ch down' title='the change[^']*95 % interval[^']*excludes 0'>"
                     r"−0.30 mm \(−5 %\)</td>", page)
    # A third visit stored without intervals: its changes fall back to repeat_mm, and
    # the comparison says so.
    store.record_session(st, make_session(tmp_path, "w4", now), "p1", "w4", "2026-02-02")
    cmp = compare.compare(st, "p1", tmp_path / "cmp")
    assert any("Stored without 95 % intervals: 2026-02-02 (w4)" in n for n in cmp.notes)
    smile = {x.muscle_group: x for x in cmp.groups}["zygomaticus"].statement
    assert "right zygomaticus: 5.9 → 5.6 mm (−5 %, within measurement variation)" in smile
    rows = _rows(tmp_path / "cmp" / compare.CSV_FILE)
    assert {r["label"]: r["change_rule"] for r in rows if r["step"] == "smile"} == {
        "w0": "", "w2": "intervals", "w4": "repeat_mm"}
