import tomllib
from pathlib import Path

import pytest

from movement.protocol import ProtocolError, available_protocols, load_protocol, parse_protocol

ROOT = Path(__file__).resolve().parents[1]


def test_standard_protocol_matches_the_reference_measurements():
    p = load_protocol("standard")
    assert [s.name for s in p.steps] == ["frown", "raise", "squint", "eee", "smile"]
    prim = {s.name: s.primary for s in p.steps}
    assert prim["frown"].name == "corrugator_procerus"
    assert prim["frown"].right == (107, 66, 55, 65)
    assert prim["raise"].kind == "up" and len(prim["raise"].left) == 10
    assert prim["squint"].kind == "aperture" and prim["squint"].sensor == "hybrid"
    assert prim["smile"].right == (61,) and prim["smile"].left == (291,)
    assert p.thresholds.min_diff_mm == 1.0 and p.thresholds.min_ratio == 0.20
    # eee and smile move the same points; they must be told apart when finding steps.
    assert p.step("eee").detect_kind != p.step("smile").detect_kind
    # Only the frown's bunching skin is matched with affine patches (docs/METHOD.md §7.5).
    assert [g.name for s in p.steps for g in s.groups if g.affine] == ["corrugator_procerus"]
    assert prim["frown"].cross_check_mm == 4.0 and prim["raise"].cross_check_mm is None


def test_protocols_are_found_by_name_and_path():
    assert "standard" in available_protocols()
    assert load_protocol(ROOT / "protocols" / "standard.toml").name == "standard"
    with pytest.raises(ProtocolError, match="not found"):
        load_protocol("no-such-protocol")


def _data():
    return tomllib.loads((ROOT / "protocols" / "standard.toml").read_text())


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["steps"][0]["groups"][0].update(right=[107, 999]), "out of range"),
        (lambda d: d["steps"][0]["groups"][0].update(kind="sideways"), "kind must be"),
        (lambda d: d["steps"][0]["groups"][0].update(primary=False), "exactly one group"),
        (lambda d: d["steps"][1].update(name="frown"), "repeat"),
        (lambda d: d["steps"][2]["groups"][0].pop("right_lower"), "right_lower"),
        (lambda d: d["steps"][0].update(anchors=["nose", "ears"]), "unknown anchor"),
        (lambda d: d["steps"][0].update(detect_group="nasalis"), "detect_group must name"),
        (lambda d: d.update(steps=[]), "no \\[\\[steps\\]\\]"),
        (lambda d: d["steps"][0]["groups"][0].update(cross_check_mm=-1), "cross_check_mm"),
        (lambda d: d["steps"][0]["groups"][0].update(affine="yes"), "affine"),
        (lambda d: d["steps"][0]["groups"][0].update(cross_check_mm="abc"), "cross_check_mm"),
        (lambda d: d["steps"][0]["groups"][0].update(repeat_mm=0), "repeat_mm"),
        (lambda d: d["steps"][0]["groups"][0].update(repeat_mm="0.5"), "repeat_mm"),
        (lambda d: d["steps"][0]["groups"][0].update(reads=0), "reads must be"),
        (lambda d: d["steps"][0]["groups"][0].update(reads=2.5), "reads must be"),
        (lambda d: d["steps"][0]["groups"][0].update(reads_spread=-0.1), "reads_spread"),
        (lambda d: d["steps"][0]["groups"][0].update(reads_floor_mm=0), "reads_floor_mm"),
        (lambda d: d["steps"][0]["groups"][0].update(reads_shared=1.0), "reads_shared"),
        (lambda d: d["steps"][0]["groups"][0].update(interval_scale=0.1), "interval_scale"),
        (lambda d: d["steps"][0]["groups"][0].update(interval_scale=5), "interval_scale"),
        (lambda d: d["steps"][0]["groups"][0].update(interval_scale="wide"), "interval_scale"),
        (lambda d: d["thresholds"].update(near_threshold=0.1), "near_threshold"),
        (lambda d: d["steps"][0].update(duration_s="abc"), "duration_s must be a number"),
        (lambda d: d["thresholds"].update(min_diff_mm="x"), "min_diff_mm must be a number"),
        (lambda d: d["detection"].update(min_bout_s=[1]), "min_bout_s must be a number"),
        (lambda d: d.update(plausibility=3), "plausibility must be a table"),
    ],
)
def test_invalid_protocols_are_refused_with_a_reason(mutate, message):
    d = _data()
    mutate(d)
    with pytest.raises(ProtocolError, match=message):
        parse_protocol(d, "test.toml")


def test_broken_toml_is_a_protocol_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    with pytest.raises(ProtocolError):
        load_protocol(bad)


def test_subset_keeps_order_of_request():
    p = load_protocol("standard").subset(["smile", "frown"])
    assert [s.name for s in p.steps] == ["smile", "frown"]


def test_extended_protocol_adds_the_lower_face_to_the_standard_steps():
    std, ext = load_protocol("standard"), load_protocol("extended")
    names = [s.name for s in ext.steps]
    assert names[:5] == [s.name for s in std.steps]
    assert names[5:] == ["pout", "scrunch", "gummy_smile", "sad_mouth", "clench", "speech"]
    # Extending copies the standard steps, not a drifting duplicate of them.
    for s in std.steps:
        assert ext.step(s.name) == s
    prim = {s.name: s.primary for s in ext.steps}
    assert prim["gummy_smile"].name == "levator_labii" and prim["gummy_smile"].kind == "up"
    # The canine, not the commissure: levator labii and zygomaticus are separate groups.
    assert set(prim["gummy_smile"].right).isdisjoint({61, 291})
    assert prim["sad_mouth"].kind == "down" and prim["sad_mouth"].right == (61,)
    assert prim["clench"].kind == "lateral" and prim["clench"].reliability
    pout = {g.name: g for g in ext.step("pout").groups}
    assert pout["orbicularis_oris"].kind == "medial" and pout["mentalis_lip"].kind == "opening"
    assert ext.step("speech").mode == "range" and prim["speech"].measure == "range_mm"
    assert {p.name for p in ext.pairs} >= {"depressor anguli oris – levator labii"}
    rest = {m.name: m.kind for m in ext.rest_measures}
    assert {"brow_medial", "brow_central", "brow_lateral", "nostril_width",
            "lower_face_width", "palpebral_aperture", "commissure_height"} <= set(rest)
    assert rest["nostril_width"] == "width"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(pairs=[dict(name="x", first="frown:no", second="raise:frontalis")]),
         "names no step's muscle group"),
        (lambda d: d.update(pairs=[dict(name="x", first="frown", second="raise:frontalis")]),
         "step:muscle_group"),
        (lambda d: d["rest_measures"][0].update(kind="depth"), "kind must be"),
        (lambda d: d["steps"][0].update(mode="sometimes"), "mode must be"),
        (lambda d: next(s for s in d["steps"] if s.get("creases"))["creases"][0].update(
            shape="blob"), "shape must be one of hull, band"),
        (lambda d: next(s for s in d["steps"] if s.get("creases"))["creases"][0].update(
            covers=["eyes", "hair"]), "covers must be a list of eyes, brows"),
    ],
)
def test_invalid_pairs_modes_and_rest_kinds_are_refused(mutate, message):
    d = _data()
    mutate(d)
    with pytest.raises(ProtocolError, match=message):
        parse_protocol(d, "test.toml")


def test_a_clinic_protocol_can_extend_another_and_loops_are_refused(tmp_path):
    (tmp_path / "mine.toml").write_text(
        'extends = "standard"\nname = "mine"\n[thresholds]\nmin_diff_mm = 1.5\n'
        '[[steps]]\nname = "wink"\nanchors = ["nose"]\n[[steps.groups]]\n'
        'muscle_group = "orbicularis_oculi"\nmeasure = "aperture_mm"\nkind = "aperture"\n'
        "primary = true\nright = [159]\nright_lower = [145]\nleft = [386]\nleft_lower = [374]\n"
    )
    p = load_protocol(tmp_path / "mine.toml")
    assert [s.name for s in p.steps][-2:] == ["smile", "wink"]
    assert p.thresholds.min_diff_mm == 1.5 and p.thresholds.min_ratio == 0.20
    (tmp_path / "a.toml").write_text('extends = "b"\nname = "a"\n')
    (tmp_path / "b.toml").write_text('extends = "a"\nname = "b"\n')
    with pytest.raises(ProtocolError, match="loops"):
        load_protocol(tmp_path / "a.toml")


def test_every_primary_mm_measure_says_how_far_two_recordings_read_apart():
    # The comparison marks smaller changes between visits as within the measurement's
    # variation; a primary group without the figure would never be marked.
    for name in ("standard", "extended"):
        for st in load_protocol(name).steps:
            if st.mode == "range":
                continue
            assert st.primary.repeat_mm is not None and 0 < st.primary.repeat_mm < 1, st.name


def test_every_primary_says_how_it_reads_and_how_that_varies():
    # The intervals (movement.analysis.uncertainty) take the method's share of the
    # truth and its spread from the protocol; the standard primaries give both.
    for st in load_protocol("standard").steps:
        g = st.primary
        assert 0.8 < g.reads <= 1.05 and 0 < g.reads_spread < 0.1, st.name
    ext = load_protocol("extended")
    assert ext.step("pout").primary.reads == pytest.approx(0.88)  # the accuracy benchmark
    # Speech's ranges have the benchmark's figures too (they once took the defaults).
    assert ext.step("speech").primary.reads_spread == pytest.approx(0.047)
    assert ext.step("speech").primary.reads_floor_mm == pytest.approx(0.073)


def test_interval_scales_are_calibrated_for_the_extended_groups_only():
    # The standard groups' intervals held 92.7-96.8 % of the benchmark's values with
    # the table's spreads alone; the extended groups carry the benchmark's
    # interval_scale table (docs/METHOD.md §11.1).
    for st in load_protocol("standard").steps:
        assert all(g.interval_scale == 1.0 for g in st.groups), st.name
    std_names = {st.name for st in load_protocol("standard").steps}
    for st in load_protocol("extended").steps:
        if st.name in std_names:
            continue
        for g in st.groups:
            assert g.interval_scale != 1.0 and 0.3 <= g.interval_scale <= 3.0, (st.name, g.name)
