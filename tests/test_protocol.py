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
        (lambda d: d.update(steps=[]), "no \\[\\[steps\\]\\]"),
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
