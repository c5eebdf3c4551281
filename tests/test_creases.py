"""Dynamic lines: known synthetic creases on the base face, read back per side.

Stills are rendered without video (movement.synth.creases.render_still) with exact
landmarks, so these tests exercise the crease measure, not the landmark model.
"""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np
import pytest
from scipy.stats import spearmanr

from movement.analysis import creases as cr
from movement.protocol import load_protocol
from movement.synth import creases as sc

# The regions exactly as the protocols define them (the extended protocol holds all).
REGIONS = {c.name: c for st in load_protocol("extended").steps for c in st.creases}
SIDES = ("right", "left")
# Rest and peak differ by a small head motion and independent sensor noise, so no
# test passes merely because two images are identical.
REST_POSE = {"roll_deg": -0.5, "shift_px": (0.4, 0.7)}
PEAK_POSE = {"roll_deg": 1.0, "shift_px": (2.3, -1.7), "zoom": 0.98}
NOISE = 1.0


def gray(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


def step_values(depth_r: float, depth_l: float, regions=REGIONS, rest_pose=None,
                peak_pose=None, textures=(), peak_fx=None, both_fx=None,
                changes: bool = False) -> dict:
    """(region, side) -> step value (with ``changes``, the CreaseChange), all regions
    folded with the same depths."""
    rest_pose = {**REST_POSE, **(rest_pose or {})}
    peak_pose = {**PEAK_POSE, **(peak_pose or {})}
    depths = {name: (depth_r, depth_l) for name in regions} if depth_r or depth_l else None
    rest = sc.render_still(None, textures=textures, noise_sigma=NOISE, seed=1, **rest_pose)
    peak = sc.render_still(depths, textures=textures, noise_sigma=NOISE, seed=2, **peak_pose)
    ri, pi = rest.image, peak.image
    if peak_fx is not None:
        pi = peak_fx(pi, peak.landmarks)
    if both_fx is not None:
        ri, pi = both_fx(ri), both_fx(pi)
    out = {}
    for name, reg in regions.items():
        for side in SIDES:
            a = cr.read_region(gray(ri), rest.landmarks, reg, side)
            b = cr.read_region(gray(pi), peak.landmarks, reg, side)
            ch = cr.crease_change([a], [b])
            assert ch.readable, (name, side, ch.reason)
            out[(name, side)] = ch if changes else ch.value
    return out


@cache
def values_cached(depth_r: float, depth_l: float) -> dict:
    return step_values(depth_r, depth_l)


# --------------------------------------------------------------------------- (a) side


@pytest.mark.parametrize("depths", [(0.25, 0.10), (0.10, 0.25)])
def test_dominant_side(depths):
    v = values_cached(*depths)
    strong = "right" if depths[0] > depths[1] else "left"
    weak = "left" if strong == "right" else "right"
    for name in REGIONS:
        s, w = v[(name, strong)], v[(name, weak)]
        assert s > 1.5 * w, (name, s, w)
        assert w > 0, (name, w)  # a 10 % fold is at the floor for the chin: only > 0


# --------------------------------------------------------------------------- (b) monotonic

DEPTHS = (0.0, 0.05, 0.1, 0.15, 0.22, 0.3)


@pytest.mark.parametrize("pose", [{"roll_deg": 4.0}, {"zoom": 0.9}], ids=["roll4", "zoom0.9"])
def test_monotonic_in_depth(pose):
    got = [step_values(d, d, rest_pose=pose, peak_pose=pose) for d in DEPTHS]
    for name in REGIONS:
        for side in SIDES:
            rho = spearmanr(DEPTHS, [g[(name, side)] for g in got]).statistic
            assert rho >= 0.9, (name, side, rho)


# --------------------------------------------------------------------------- (c) confounders

CONFOUNDERS = {
    "noise_and_head_motion": {},
    "global_light_0.8": {"peak_fx": lambda im, lm: sc.global_light(im, 0.8)},
    "one_sided_light": {"peak_fx": lambda im, lm: sc.one_sided_light(im, lm, 0.7)},
    "jpeg_q30": {"both_fx": lambda im: sc.jpeg(im, 30)},
    "hair": {"textures": (sc.hair_texture(),)},
    "beard": {"textures": (sc.beard_texture(),)},
    "glasses": {"textures": (sc.glasses_texture(),)},
}


@pytest.mark.parametrize("kind", list(CONFOUNDERS))
def test_confounders_read_below_noise_floor(kind):
    got = step_values(0.0, 0.0, **CONFOUNDERS[kind], changes=True)
    # The base face's fringe over its left forehead rests above CLUTTER_PCT: that
    # value is not reported (flagged unreadable), so it is not held to the floor.
    clutter = {k for k, c in got.items() if c.rest > cr.CLUTTER_PCT}
    assert clutter <= {("forehead", "left")}, clutter
    assert all(any(f.startswith("region unreadable") for f in cr.line_flags(got[k]))
               for k in clutter)
    v = {k: c.value for k, c in got.items() if k not in clutter}
    worst = max(abs(x) for x in v.values())
    assert worst < cr.NOISE_FLOOR_PCT, (kind, v)
    # ... and well below a real (moderate) crease under the same confounder.
    real = step_values(0.25, 0.25, **CONFOUNDERS[kind])
    assert min(real.values()) > 2 * cr.NOISE_FLOOR_PCT, (kind, real)


def test_confounders_are_visible_in_the_image():
    """The confounders must actually darken the regions they target (else (c) is void)."""
    still = sc.render_still(None)
    for tex, region in ((sc.hair_texture(), "forehead"), (sc.beard_texture(), "chin"),
                        (sc.glasses_texture(), "crow_feet")):
        lm = sc.base_face().landmarks[list(REGIONS[region].right + REGIONS[region].left)]
        s = tex.at(lm.mean(axis=0, keepdims=True) + np.zeros((1, 2)))
        assert tex.shade.min() < 0.85, region
        assert 0.0 < s[0] <= 1.0
    assert still.image.shape == (600, 600, 3)


# --------------------------------------------------------------------------- (d) mirror


def _mirror_perm() -> np.ndarray:
    """Index map swapping the sides of the landmarks these tests use."""
    perm = np.arange(478)
    pairs = [(33, 263)] + list(zip(range(468, 473), range(473, 478), strict=True))
    for reg in REGIONS.values():
        pairs += list(zip(reg.right, reg.left, strict=True))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


def test_mirror_consistency():
    still = sc.render_still({n: (0.25, 0.1) for n in REGIONS}, noise_sigma=NOISE,
                            roll_deg=2.0, shift_px=(3.3, -2.1))
    g = gray(still.image)
    w = g.shape[1]
    flipped = cv2.flip(g, 1)
    lm_f = still.landmarks.copy()
    lm_f[:, 0] = (w - 1) - lm_f[:, 0]
    lm_f = lm_f[_mirror_perm()]
    for name, reg in REGIONS.items():
        for side, other in (("right", "left"), ("left", "right")):
            a = cr.read_region(g, still.landmarks, reg, side).strength
            b = cr.read_region(flipped, lm_f, reg, other).strength
            assert abs(a - b) <= 0.02 * max(a, b) + 0.02, (name, side, a, b)


# --------------------------------------------------------------------------- (e) unreadable


def test_tiny_face_is_unreadable():
    still = sc.render_still(None, zoom=0.2, frame_size=(200, 200))
    for reg in REGIONS.values():
        r = cr.read_region(gray(still.image), still.landmarks, reg, "right")
        assert not r.readable and "too small" in r.reason
        assert np.isnan(r.strength)


def test_region_out_of_frame_is_unreadable():
    still = sc.render_still(None, shift_px=(0.0, -330.0))
    r = cr.read_region(gray(still.image), still.landmarks, REGIONS["forehead"], "left")
    assert not r.readable and "outside the image" in r.reason
    ok = cr.read_region(gray(still.image), still.landmarks, REGIONS["chin"], "left")
    assert ok.readable, ok.reason


def test_clipped_region_is_unreadable_and_step_says_why():
    still = sc.render_still(None)
    g = gray(still.image)
    rest = cr.read_region(g, still.landmarks, REGIONS["chin"], "right")
    lm = still.landmarks[list(REGIONS["chin"].right)]
    x0, y0 = np.floor(lm.min(axis=0)).astype(int) - 10
    x1, y1 = np.ceil(lm.max(axis=0)).astype(int) + 10
    g[y0:y1, x0:x1] = 255
    peak = cr.read_region(g, still.landmarks, REGIONS["chin"], "right")
    assert not peak.readable and "clipped" in peak.reason
    ch = cr.crease_change([rest], [peak])
    assert not ch.readable and "peak" in ch.reason and np.isnan(ch.value)


# --------------------------------------------------------------------------- pieces


def test_rest_is_zero_and_change_is_signed():
    a = cr.CreaseReading(3.0, np.zeros((2, 2), np.float32), np.eye(2, 3), True)
    b = cr.CreaseReading(5.0, np.zeros((2, 2), np.float32), np.eye(2, 3), True)
    assert cr.crease_change([a], [b]).value == pytest.approx(4.0)
    assert cr.crease_change([b], [a]).value == pytest.approx(-4.0)
    assert cr.crease_change([a, a], [a, b, b]).peak == pytest.approx(5.0)


def test_shading_matches_its_design():
    face = sc.base_face()
    for name in sc.DESIGNS:
        x0, y0, x1, y1 = sc.crease_bbox(name)
        xs, ys = np.meshgrid(np.arange(x0, x1), np.arange(y0, y1))
        pts = np.stack([xs.ravel(), ys.ravel()], axis=1)
        s = sc.crease_shade(pts, name, 0.3, 0.1)
        assert 0.69 <= s.min() < 0.75, name  # deepest point is the requested depth
        assert np.all(s <= 1.0)
        border = np.concatenate([s.reshape(xs.shape)[[0, -1]].ravel(),
                                 s.reshape(xs.shape)[:, [0, -1]].ravel()])
        assert border.min() > 0.999, name  # nothing outside the box
        assert np.all(sc.crease_shade(pts, name, 0.3, 0.1, activation=0.0) == 1.0)
        # The right side's folds lie on the image left of the unmirrored base photo.
        dark = pts[s < 0.8]
        assert np.all((dark - face.landmarks[[33, 263]].mean(axis=0)) @ face.lateral < 0), name


def test_draw_heat_marks_the_region_only():
    still = sc.render_still({"crow_feet": (0.3, 0.0)})
    r = cr.read_region(gray(still.image), still.landmarks, REGIONS["crow_feet"], "right")
    out = cr.draw_heat(still.image, r)
    assert out.shape == still.image.shape and out.dtype == np.uint8
    changed = np.any(out != still.image, axis=2)
    ys, xs = np.nonzero(changed)
    assert ys.size > 50
    corner = still.landmarks[33]
    # Everything drawn lies near the right outer eye corner, on the image left.
    d = np.hypot(xs - corner[0], ys - corner[1]) / still.px_per_mm
    assert d.max() < 30
    assert xs.max() < still.landmarks[168, 0]


def test_the_protocol_folds_the_regions_the_generator_draws():
    proto = load_protocol("extended")
    steps: dict[str, set[str]] = {}
    for st in proto.steps:
        for c in st.creases:
            steps.setdefault(c.name, set()).add(st.name)
    assert steps == {n: {s for s, r in sc.STEP_CREASES.items() if n in r} for n in REGIONS}
    assert set(REGIONS) == {"forehead", "glabella", "crow_feet", "bunny_lines", "chin"}


# --------------------------------------------------------------------------- (f) same skin
#
# step_lines compares each peak frame with the rest frames moved onto it by the skin's
# movement (landmarks, then image registration), off the eye openings.

def skin_warp(img: np.ndarray, lm: np.ndarray, centre: np.ndarray, up_mm: float,
              sigma_mm: float, px_per_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The image and landmarks with the skin around ``centre`` slid up ``up_mm`` (a
    Gaussian bump of displacement, as a raise moves the forehead): etched lines there
    move relative to the landmarks' hull."""
    h, w = img.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))

    def shift(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        r2 = ((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (sigma_mm * px_per_mm) ** 2
        return (up_mm * px_per_mm * np.exp(-r2 / 2)).astype(np.float32)

    # Backward map: the frame pixel (x, y) shows the skin that was at (x, y + shift).
    out = cv2.remap(img, gx, gy + shift(gx, gy), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REFLECT)
    moved = lm.copy()
    for _ in range(3):  # landmark y moves to y' with y' + shift(y') = y
        moved[:, 1] = lm[:, 1] - shift(moved[:, 0], moved[:, 1])
    return out, moved


def frame(still: sc.Still, img: np.ndarray | None = None, lm: np.ndarray | None = None):
    return cr.LineFrame(gray(still.image if img is None else img),
                        still.landmarks if lm is None else lm)


def same_skin(rest_depth: float, peak_depth: float, region: str, up_mm: float = 2.5
              ) -> dict[str, tuple[float, float]]:
    """side -> (step_lines value, region-following value) with lines ``rest_depth`` deep
    at rest (etched) and ``peak_depth`` at the peak, the skin slid ``up_mm`` at the peak."""
    reg = REGIONS[region]
    rest = sc.render_still({region: (rest_depth, rest_depth)} if rest_depth else None,
                           noise_sigma=NOISE, seed=1)
    peak = sc.render_still({region: (peak_depth, peak_depth)} if peak_depth else None,
                           noise_sigma=NOISE, seed=2)
    centre = peak.landmarks[list(reg.right + reg.left)].mean(axis=0)
    img, lm = skin_warp(peak.image, peak.landmarks, centre, up_mm, 6.0, peak.px_per_mm)
    out = {}
    for side in SIDES:
        new = cr.step_lines([frame(rest)], [frame(peak, img, lm)], reg, side)
        old = cr.crease_change([cr.read_region(gray(rest.image), rest.landmarks, reg, side)],
                               [cr.read_region(gray(img), lm, reg, side)])
        assert new.readable, new.reason
        out[side] = (new.value, old.value)
    return out


@pytest.mark.parametrize("region", ["glabella", "forehead", "crow_feet"])
def test_etched_lines_that_move_are_not_folds(region):
    got = same_skin(0.35, 0.35, region)
    for side, (new, old) in got.items():
        assert abs(new) < cr.NOISE_FLOOR_PCT, (region, side, new)
        if region == "glabella":
            # The confound is real: following the region's landmarks alone reads the
            # lines sliding through it as a change (else this test would prove nothing).
            assert abs(old) > 1.5 * cr.NOISE_FLOOR_PCT, (region, side, new, old)


def test_etched_lines_that_deepen_are_folds():
    deepen = same_skin(0.15, 0.45, "forehead")
    still = same_skin(0.15, 0.15, "forehead")
    for side in SIDES:
        assert deepen[side][0] > 3 * cr.NOISE_FLOOR_PCT, (side, deepen)
        assert deepen[side][0] > 3 * abs(still[side][0]), (side, deepen, still)


def test_softened_lines_read_negative_and_the_flag_says_why():
    reg = REGIONS["forehead"]
    # Etched lines (below the clutter rule at rest) that the step smooths.
    rest = sc.render_still({"forehead": (0.2, 0.2)}, noise_sigma=NOISE, seed=1)
    peak = sc.render_still({"forehead": (0.05, 0.05)}, noise_sigma=NOISE, seed=2,
                           **PEAK_POSE)
    c = cr.step_lines([frame(rest)] * 3, [frame(peak)], reg, "right")
    assert c.value < -2 * cr.NOISE_FLOOR_PCT and c.hi < 0, (c.value, c.hi)
    assert any("softened" in f for f in cr.line_flags(c))
    grown = cr.step_lines([frame(peak)], [frame(rest)], reg, "right")
    assert grown.value > 2 * cr.NOISE_FLOOR_PCT and not cr.line_flags(grown)


def test_eye_closing_is_not_a_line():
    """The eye opening painted over with skin at the peak (the lids closed, lashes
    gone): nothing of it reaches the crow's-feet value."""
    reg = REGIONS["crow_feet"]
    rest = sc.render_still(None, noise_sigma=NOISE, seed=1)
    peak = sc.render_still(None, noise_sigma=NOISE, seed=2)
    img = peak.image.copy()
    for ring in cr.EYE_RING.values():
        poly = np.round(peak.landmarks[list(ring)]).astype(np.int32)
        x0, y0 = poly.min(axis=0)
        skin = img[y0 - 12:y0 - 4, x0:x0 + 20].reshape(-1, 3).mean(axis=0)
        cv2.fillPoly(img, [poly], skin.tolist())
        cv2.polylines(img, [poly], True, skin.tolist(), 3)
    assert np.abs(img.astype(int) - peak.image.astype(int)).max() > 40  # the eye did change
    for side in SIDES:
        c = cr.step_lines([frame(rest)], [frame(peak, img)], reg, side)
        assert c.readable and abs(c.value) < cr.NOISE_FLOOR_PCT, (side, c.value)


def test_thicker_brows_are_not_forehead_lines():
    """The brows darkened and thickened at the peak (what a raise's hairs and shadow
    do): the forehead band runs above the brow along its arch and the brows are left
    out, so nothing of them reaches the forehead value."""
    reg = REGIONS["forehead"]
    rest = sc.render_still(None, noise_sigma=NOISE, seed=1)
    peak = sc.render_still(None, noise_sigma=NOISE, seed=2)
    img = peak.image.copy()
    px_per_mm = cr.iris_diameter_px(peak.landmarks) / cr.IRIS_DIAMETER_MM
    for ring in cr.BROW_RING.values():
        poly = np.round(peak.landmarks[list(ring)]).astype(np.int32)
        dark = (0.5 * img[poly[:, 1], poly[:, 0]].mean(axis=0)).tolist()
        cv2.fillPoly(img, [poly], dark)
        # Hairs reaching half a millimetre past FaceMesh's outline.
        cv2.polylines(img, [poly], True, dark, max(int(round(px_per_mm)), 1))
    assert np.abs(img.astype(int) - peak.image.astype(int)).max() > 40  # the brows changed
    for side in SIDES:
        c = cr.step_lines([frame(rest)], [frame(peak, img)], reg, side)
        if c.rest > cr.CLUTTER_PCT:
            # The base face's fringe over its left forehead: not read, and said so.
            assert any(f.startswith("region unreadable") for f in cr.line_flags(c)), side
            continue
        assert c.readable and abs(c.value) < cr.NOISE_FLOOR_PCT, (side, c.value)


def test_deep_folds_read_deeper_not_saturated():
    reg = REGIONS["crow_feet"]
    rest = sc.render_still(None, noise_sigma=NOISE, seed=1, **REST_POSE)
    vals = []
    for d in (0.3, 0.6, 0.9):
        peak = sc.render_still({"crow_feet": (d, d)}, noise_sigma=NOISE, seed=2, **PEAK_POSE)
        vals.append(cr.step_lines([frame(rest)], [frame(peak)], reg, "left").value)
    assert vals[1] > 1.3 * vals[0] and vals[2] > 1.3 * vals[1], vals


def test_varied_designs_are_seeded_and_varied():
    assert sc.varied_design("forehead", 0) is sc.DESIGNS["forehead"]
    a, b = sc.varied_design("forehead", 5), sc.varied_design("forehead", 5)
    assert a == b
    designs = [sc.varied_design(n, s) for n in ("forehead", "crow_feet") for s in range(1, 13)]
    assert len({len(d.lines) for d in designs}) >= 4
    assert len({round(d.width_mm, 2) for d in designs}) >= 10
    still = sc.render_still({"crow_feet": (0.9, 0.9)})
    assert still.image.min() >= 0  # 0.9 is accepted (MAX_DEPTH)
    with pytest.raises(ValueError):
        sc.crease_shade(np.zeros((1, 2)), "forehead", sc.MAX_DEPTH + 0.01, 0.0)


def test_a_fringe_at_rest_leaves_the_call_open_not_a_side():
    """Hair over the forehead at rest and peak, no folds, the skin slid: the interval
    is widened by the rest's line energy, so neither side is called deeper."""
    from movement.analysis.dominance import _crease_call

    th = load_protocol("standard").thresholds
    reg = REGIONS["forehead"]
    hair = (sc.hair_texture(darkness=0.7, n=30),)
    rest = sc.render_still(None, textures=hair, noise_sigma=NOISE, seed=1, **REST_POSE)
    peak = sc.render_still(None, textures=hair, noise_sigma=NOISE, seed=2, **PEAK_POSE)
    centre = peak.landmarks[list(reg.right + reg.left)].mean(axis=0)
    img, lm = skin_warp(peak.image, peak.landmarks, centre, 2.5, 6.0, peak.px_per_mm)
    got = [cr.step_lines([frame(rest)], [frame(peak, img, lm)], reg, s) for s in SIDES]
    assert all(c.readable for c in got)
    assert max(c.rest for c in got) > 4.0  # the fringe is strong at rest
    for c in got:  # the interval spans at least a fifth of the rest energy each way
        span = c.hi * abs(c.hi) - c.lo * abs(c.lo)
        assert span >= 0.4 * c.rest ** 2, (c.lo, c.hi, c.rest)
    call = _crease_call((got[0].lo, got[0].hi), (got[1].lo, got[1].hi), th)
    assert call in ("balanced", "uncertain"), [(c.value, c.lo, c.hi, c.rest) for c in got]


def _with_lashes(still, sides=SIDES) -> np.ndarray:
    """``still``'s image with made-up lashes: dark strokes 5-7 mm long from the outer
    eye corner (an eyeliner wing and the outer lashes reaching into the crow's feet)."""
    img = still.image.copy()
    ppm = float(still.px_per_mm)
    lm = still.landmarks
    for side, (corner, iris) in {"right": (33, 468), "left": (263, 473)}.items():
        if side not in sides:
            continue
        out = lm[corner] - lm[iris]
        out = out / np.linalg.norm(out)
        for ang, length in ((-30, 7.0), (-18, 6.5), (-6, 6.0), (6, 5.0)):
            th = np.radians(ang if side == "left" else -ang)
            d = np.array([out[0] * np.cos(th) - out[1] * np.sin(th),
                          out[0] * np.sin(th) + out[1] * np.cos(th)])
            a = lm[corner] + 0.3 * ppm * d
            b = a + length * ppm * d
            cv2.line(img, tuple(np.round(a * 16).astype(int)), tuple(np.round(b * 16).astype(int)),
                     (25, 20, 20), max(int(round(0.5 * ppm)), 1), cv2.LINE_AA, shift=4)
    return img


def test_lashes_past_the_eye_corner_are_left_out(monkeypatch):
    """Lashes reaching past the outer eye corner, the same at rest and at the peak,
    one side only: the crow's feet stay readable (without the lash rule they rest
    above the clutter line) and equal folds still read alike."""
    reg = REGIONS["crow_feet"]
    rest = sc.render_still(None, noise_sigma=NOISE, seed=1, **REST_POSE)
    peak = sc.render_still({"crow_feet": (0.3, 0.3)}, noise_sigma=NOISE, seed=2, **PEAK_POSE)
    lashed = [frame(rest, _with_lashes(rest, ("right",))),
              frame(peak, _with_lashes(peak, ("right",)))]
    plain = {s: cr.step_lines([frame(rest)], [frame(peak)], reg, s) for s in SIDES}
    got = {s: cr.step_lines([lashed[0]], [lashed[1]], reg, s) for s in SIDES}
    for s in SIDES:
        assert got[s].readable and not cr.line_flags(got[s]), (s, got[s].rest)
    assert got["right"].rest < cr.CLUTTER_PCT
    assert abs(got["right"].value / got["left"].value - 1) < 0.2, (got["right"].value,
                                                                   got["left"].value)
    assert abs(got["right"].value / plain["right"].value - 1) < 0.2
    # The lashes were strong enough to matter: read without the rule, the region
    # rests as if covered.
    monkeypatch.setattr(cr, "LASH_REACH_MM", 0.0)
    bare = cr.step_lines([lashed[0]], [lashed[1]], reg, "right")
    assert bare.rest > cr.CLUTTER_PCT and bare.rest > got["right"].rest + 3, (
        bare.rest, got["right"].rest)
