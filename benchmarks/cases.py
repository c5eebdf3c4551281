"""The accuracy benchmark's consults: the cases, their seeded truth, and one case's run.

Each :class:`Case` is a condition (frame, head motion, degradations, protocol, face)
with a seeded amplitude pattern (:func:`pattern`); :func:`run_case` generates it with
:mod:`movement.synth`, analyses it with ``movement analyze`` in a subprocess and
returns every group's truth beside what was measured, for :mod:`scoring`.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# The benchmark measures the checkout it lies in, whatever `movement` is installed:
# the generator and the scoring run in this process, the analysis in a subprocess
# (checkout_env), both from ROOT.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
REAL_CLIP = ROOT.parent / "shared" / "data" / "pexels_wolfganglanger_cry_laugh.mp4"
SECOND_FACE_FRAME = 240
"""Frame of the real clip the second face is taken from (10.0 s): frontal (nose within 3 %
of the inter-eye distance from the eyes' midpoint), eyes open, lips slightly apart."""
STEPS = ("frown", "raise", "squint", "eee", "smile")
EXTENDED_STEPS = ("pout", "scrunch", "gummy_smile", "sad_mouth", "clench", "speech")

RANGES = {
    "frown": (0.5, 4.0),
    "raise": (0.5, 6.0),
    "squint": (0.3, 3.0),
    "eee": (0.5, 5.0),
    "smile": (1.0, 7.0),
    "pout": (0.5, 3.0),
    "scrunch": (0.5, 3.0),
    "gummy_smile": (0.5, 4.0),
    "sad_mouth": (0.5, 4.0),
    "clench": (0.3, 2.5),
    "speech": (0.5, 4.0),
}
"""Realistic per-side amplitude ranges (mm) the patterns are drawn from; all well
inside the generator's field limits (frown 6, raise 10, squint 4, eee 8, smile 10;
pout 3.0, scrunch 3.5, gummy smile 4.5, sad mouth 4.5, clench 2.5, speech 4.0)."""
STILL_MM = (0.05, 0.3)
"""The nearly still side of a 'still' pair (below the realistic range on purpose)."""
BALANCED_MM = 0.35
"""Truth pairs differing by at most this much must be reported ``balanced``."""
DECISIVE_MM, DECISIVE_RATIO = 1.0, 0.20

# ----------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One generated consult: a condition, an amplitude pattern and a seed."""

    name: str
    condition: str
    pattern: str  # mix | asym | sym | still
    seed: int
    spec: dict = field(default_factory=dict)  # SynthSpec fields besides steps/duration
    mirrored: bool = False
    protocol: str = "standard"
    skip: tuple[str, ...] = ()  # steps the patient does not perform: must read missing
    creases: bool = False  # fold the skin (dynamic lines) with seeded per-side depths

    @property
    def steps(self) -> tuple[str, ...]:
        return STEPS + (EXTENDED_STEPS if self.protocol == "extended" else ())

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.spec.get("frame_size", (960, 540)))  # type: ignore[return-value]

    def describe(self) -> str:
        s = dict(self.spec)
        w, h = s.pop("frame_size", (960, 540))
        face = s.pop("face", None)
        bits = [f"{w}x{h}"] + [f"{k}={v}" for k, v in s.items()]
        if face:
            bits.append(f"face {Path(face).name}")
        if self.mirrored:
            bits.append("analysed --mirrored")
        if self.protocol != "standard":
            bits.append(f"--protocol {self.protocol}")
        if self.skip:
            bits.append(f"skips {'+'.join(self.skip)}")
        if self.creases:
            bits.append("creases")
        return ", ".join(bits)


HD, SD, PORTRAIT = (1280, 720), (960, 540), (720, 1280)
MILD = dict(roll_deg=2.0, shift_px=8.0, zoom=0.02, noise_sigma=1.5)
HEAD = dict(roll_deg=5.0, shift_px=20.0, zoom=0.05, noise_sigma=1.0)


def all_cases() -> list[Case]:
    """The full set. 960x540 unless the case is about the frame itself."""
    c: list[Case] = []

    def add(name, condition, pattern, n, seed0, mirrored=False, protocol="standard", skip=(),
            creases=False, **spec):
        for i in range(n):
            c.append(Case(f"{name}-{i + 1}", condition, pattern, seed0 + i, spec, mirrored,
                          protocol, tuple(skip), creases))

    add("clean-asym", "clean 1280x720", "asym", 3, 101, frame_size=HD)
    add("clean-sym", "clean 1280x720", "sym", 2, 111, frame_size=HD)
    add("clean-still", "clean 1280x720", "still", 2, 121, frame_size=HD)
    add("clean-mix", "clean 960x540", "mix", 3, 131, frame_size=SD)
    add("mirrored", "mirrored selfie", "mix", 3, 201, mirrored=True, frame_size=SD, **MILD)
    add("portrait", "portrait 720x1280", "mix", 3, 301, frame_size=PORTRAIT, **MILD)
    add("small-face", "small face 0.35", "mix", 2, 401, frame_size=HD, face_height_frac=0.35,
        noise_sigma=1.0)
    add("small-face-sd", "small face 0.35", "mix", 1, 411, frame_size=SD, face_height_frac=0.35,
        noise_sigma=1.0)
    add("head-motion", "head roll 5/shift 20/zoom .05", "mix", 4, 501, frame_size=SD, **HEAD)
    add("noise-jpeg", "noise 3 + jpeg 35", "mix", 3, 601, frame_size=SD, noise_sigma=3.0,
        jpeg_quality=35)
    add("blur", "blur 1.2", "mix", 2, 701, frame_size=SD, blur_sigma=1.2, noise_sigma=1.0)
    add("light", "lighting drift 0.25", "mix", 2, 801, frame_size=SD, light_drift=0.25,
        noise_sigma=1.0)
    add("phone", "phone: portrait selfie, motion, noise, jpeg", "mix", 3, 901, mirrored=True,
        frame_size=PORTRAIT, roll_deg=3.0, shift_px=12.0, zoom=0.03, noise_sigma=2.0,
        jpeg_quality=50)
    # Dynamic lines: the skin folds as the muscles pull (standard protocol).
    add("crease-clean", "creases, clean 1280x720", "mix", 2, 1101, creases=True, frame_size=HD)
    add("crease-mild", "creases, mild motion", "mix", 2, 1111, creases=True, frame_size=SD,
        **MILD)
    add("crease-light", "creases, lighting drift 0.25", "mix", 1, 1121, creases=True,
        frame_size=SD, light_drift=0.25, noise_sigma=1.0)
    add("crease-jpeg", "creases, noise 3 + jpeg 35", "mix", 1, 1131, creases=True,
        frame_size=SD, noise_sigma=3.0, jpeg_quality=35)
    # Extended protocol (about 62 s each): the lower face, speech, skipped steps; with lines.
    add("ext-clean", "extended, clean 1280x720", "mix", 2, 1201, protocol="extended",
        creases=True, frame_size=HD)
    add("ext-mild", "extended, mild motion", "mix", 2, 1211, protocol="extended",
        creases=True, frame_size=SD, **MILD)
    add("ext-mirrored", "extended, mirrored selfie", "asym", 1, 1221, mirrored=True,
        protocol="extended", creases=True, frame_size=SD, **MILD)
    add("ext-jpeg", "extended, noise 3 + jpeg 35", "mix", 1, 1231, protocol="extended",
        creases=True, frame_size=SD, noise_sigma=3.0, jpeg_quality=35)
    add("ext-skip", "extended, steps skipped", "mix", 1, 1241, protocol="extended",
        skip=("sad_mouth", "scrunch"), creases=True, frame_size=SD, **MILD)
    # One extended consult under each standard condition the ones above do not cover,
    # so the extended figures are not only those of easy footage (and rest on twice
    # the pairs: 9 consults gave 53 decisive ones, too few to tell 92 % from 95 %).
    add("ext-portrait", "extended, portrait 720x1280", "mix", 1, 1251, protocol="extended",
        creases=True, frame_size=PORTRAIT, **MILD)
    add("ext-small-face", "extended, small face 0.35", "mix", 1, 1252, protocol="extended",
        creases=True, frame_size=HD, face_height_frac=0.35, noise_sigma=1.0)
    add("ext-head-motion", "extended, head roll 5/shift 20/zoom .05", "mix", 1, 1253,
        protocol="extended", creases=True, frame_size=SD, **HEAD)
    add("ext-blur", "extended, blur 1.2", "mix", 1, 1254, protocol="extended", creases=True,
        frame_size=SD, blur_sigma=1.2, noise_sigma=1.0)
    add("ext-light", "extended, lighting drift 0.25", "mix", 1, 1255, protocol="extended",
        creases=True, frame_size=SD, light_drift=0.25, noise_sigma=1.0)
    add("ext-phone", "extended, phone: portrait selfie, motion, noise, jpeg", "mix", 1, 1256,
        protocol="extended", mirrored=True, creases=True, frame_size=PORTRAIT, roll_deg=3.0,
        shift_px=12.0, zoom=0.03, noise_sigma=2.0, jpeg_quality=50)
    # A second face: one frame of the real clip, when ../shared is present. Another
    # skin, lighting, eye shape and resolution (upscaled from a 640x360 video frame).
    if REAL_CLIP.exists():
        face = f"{REAL_CLIP}@{SECOND_FACE_FRAME}"
        add("face2-asym", "second face, clean 960x540", "asym", 2, 1301, frame_size=SD,
            face=face)
        add("face2-mix", "second face, clean 960x540", "mix", 2, 1311, frame_size=SD,
            face=face)
        add("face2-sym", "second face, clean 960x540", "sym", 1, 1321, frame_size=SD,
            face=face)
        add("face2-mild", "second face, mild motion", "mix", 2, 1331, frame_size=SD,
            face=face, **MILD)
        add("face2-mirrored", "second face, mirrored selfie", "mix", 1, 1341, mirrored=True,
            frame_size=SD, face=face, **MILD)
        add("face2-ext", "second face, extended, mild motion", "mix", 2, 1351,
            protocol="extended", creases=True, frame_size=SD, face=face, **MILD)
    return c


def quick_cases() -> list[Case]:
    names = {"clean-asym-1", "mirrored-1", "portrait-1", "head-motion-1", "noise-jpeg-1",
             "ext-mild-1"}
    return [c for c in all_cases() if c.name in names]


def draw_pair(rng: np.random.Generator, step: str, kind: str) -> tuple[float, float]:
    """(right, left) mm for one step of the given kind, within the realistic range."""
    lo, hi = RANGES[step]
    if kind in ("right", "left"):
        big = rng.uniform(max(lo + DECISIVE_MM, lo / (1 - DECISIVE_RATIO)), hi)
        small = rng.uniform(lo, min(big - DECISIVE_MM, (1 - DECISIVE_RATIO) * big))
        pair = (big, small) if kind == "right" else (small, big)
    elif kind == "balanced":
        a = rng.uniform(lo, hi)
        b = float(np.clip(a + rng.uniform(-BALANCED_MM, BALANCED_MM), lo, hi))
        pair = (a, b)
    elif kind == "still":
        moving = rng.uniform(max(lo, 1.5), hi)
        still = rng.uniform(*STILL_MM)
        pair = (moving, still) if rng.random() < 0.5 else (still, moving)
    else:
        raise ValueError(kind)
    return round(float(pair[0]), 2), round(float(pair[1]), 2)


def pattern(case: Case) -> dict[str, tuple[float, float]]:
    """The case's seeded amplitudes: which kind of pair each step gets, then the values."""
    rng = np.random.default_rng(case.seed)
    steps = case.steps
    if case.pattern == "asym":
        kinds = [("right", "left")[(i + case.seed) % 2] for i in range(len(steps))]
    elif case.pattern == "sym":
        kinds = ["balanced"] * len(steps)
    elif case.pattern == "still":
        kinds = ["still"] * len(steps)
    else:
        four = ("right", "left", "balanced", "still")
        kinds = [four[(i + case.seed) % 4] for i in range(len(steps))]
    return {s: draw_pair(rng, s, k) for s, k in zip(steps, kinds, strict=True)}


CREASE_DEPTHS = (0.05, 0.35)
"""Fold depths drawn for the lines (fraction darker at the fold centre)."""
CREASE_DECISIVE = 1.6
"""A truth pair of depths is decisive when the deeper side is at least this many
times the other and at least 0.12 deep; balanced when both are equal."""


def crease_pattern(case: Case) -> dict[str, tuple[float, float]]:
    """Seeded fold depths per step with lines: deeper right, deeper left or equal."""
    from movement.synth.creases import STEP_CREASES

    rng = np.random.default_rng(case.seed + 7)
    out = {}
    for i, step in enumerate(s for s in case.steps if s in STEP_CREASES):
        kind = ("right", "left", "balanced")[(i + case.seed) % 3]
        big = rng.uniform(0.15, CREASE_DEPTHS[1])
        if kind == "balanced":
            pair = (big, big)
        else:
            small = rng.uniform(CREASE_DEPTHS[0], big / CREASE_DECISIVE)
            pair = (big, small) if kind == "right" else (small, big)
        out[step] = (round(float(pair[0]), 3), round(float(pair[1]), 3))
    return out


def crease_kind(r: float, lft: float) -> str:
    if r == lft:
        return "balanced"
    hi, lo = max(r, lft), min(r, lft)
    if hi >= 0.12 and hi >= CREASE_DECISIVE * lo:
        return "right" if r > lft else "left"
    return "between"


def truth_kind(r: float, lft: float) -> str:
    d = r - lft
    if abs(d) <= BALANCED_MM:
        return "balanced"
    if abs(d) >= DECISIVE_MM and abs(d) / max(r, lft) >= DECISIVE_RATIO:
        return "right" if d > 0 else "left"
    return "between"


# ----------------------------------------------------------------------------- running


def movement_cmd() -> list[str]:
    """``movement`` run from this checkout's code (see :func:`checkout_env`), whatever
    the installed console script points at."""
    return [sys.executable, "-m", "movement.cli"]


def checkout_env() -> dict[str, str]:
    """The environment with this checkout first on the import path, so a benchmark
    measures the code beside it, not another installation."""
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (root, env.get("PYTHONPATH")) if x)
    return env


@dataclass
class CliRun:
    code: int
    seconds: float
    error: str
    out: Path


def run_cli(video: Path, out: Path, *extra: str) -> CliRun:
    """``movement analyze VIDEO --out OUT -q [extra]`` in a subprocess."""
    t0 = time.perf_counter()
    p = subprocess.run(
        [*movement_cmd(), "analyze", str(video), "--out", str(out), "-q", "--force", *extra],
        capture_output=True,
        text=True,
        env=checkout_env(),
    )
    err = ""
    if p.returncode != 0:
        lines = [ln for ln in p.stderr.splitlines() if ln.startswith("movement:")]
        err = (lines or p.stderr.strip().splitlines() or ["?"])[-1]
    return CliRun(p.returncode, time.perf_counter() - t0, err, out)


def read_rows(out: Path) -> dict[tuple[str, str, str], dict]:
    """asymmetry.csv keyed by (step, muscle_group, measure)."""
    rows = {}
    with open(out / "asymmetry.csv", newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            rows[(r["step"], r["muscle_group"], r["measure"])] = r
    return rows


def fnum(v: object) -> float:
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def primary_rows(out: Path) -> dict[str, dict]:
    return {k[0]: r for k, r in read_rows(out).items() if r["primary"].strip() == "True"}


def session_peaks(out: Path) -> dict[str, float]:
    s = json.loads((out / "session.json").read_text(encoding="utf-8"))
    return {x["name"]: fnum(x.get("peak_s")) for x in s["steps"]}


def write_flipped(src: Path, dst: Path, fourcc: str = "mp4v", flip: bool = True) -> int:
    """A (horizontally flipped) copy of ``src`` written with OpenCV; returns frames written."""
    import cv2

    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    wr = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    if not wr.isOpened():
        raise RuntimeError(f"cannot write {dst} with codec {fourcc}")
    n = 0
    try:
        while True:
            ok, img = cap.read()
            if not ok:
                break
            wr.write(cv2.flip(img, 1) if flip else img)
            n += 1
    finally:
        cap.release()
        wr.release()
    return n


def tracked_truth(spec: object, out: Path) -> tuple[dict[tuple[str, str], tuple[float, float]],
                                                     float]:
    """The truth re-read at the points the analysis tracked, and the scale's error.

    A diagnostic, not a target. The reference truth (the targets) is the movement at
    the generator's landmarks, found by FaceMesh on the uncompressed base photo (median
    of 64 cuts); the analysis tracks the landmarks FaceMesh finds on the video's
    keyframe (median of 8 cuts), which sit a few tenths of a millimetre away. Where a field is steep
    that alone changes a side's truth by several percent. Reading the field at the
    tracked points (``q = p + f(q)`` from each step's keyframe landmarks, mapped to the
    base photo through the known head motion) separates that from the tracking.
    Returns {(step, group): (right, left)} and our mm/px over the generator's.
    """
    from movement import synth

    session = json.loads((out / "session.json").read_text(encoding="utf-8"))
    clip = session["clips"][0]
    npz = np.load(out / "landmarks.npz")
    px = npz["px"]
    # The points a step tracked start where its keyframe's detections put them.
    placed = dict(zip(npz["keyframes"].tolist(), npz["keyframe_px"], strict=True)) if (
        "keyframes" in npz.files) else {}
    ren = synth.Renderer(spec)  # type: ignore[arg-type]
    face = ren.face
    proto = synth.protocol(spec.protocol)  # type: ignore[attr-defined]
    found = {s["name"]: s for s in session["steps"] if s.get("found")}
    res: dict[tuple[str, str], tuple[float, float]] = {}
    for st in spec.steps:  # type: ignore[attr-defined]
        k = found.get(st.name, {}).get("keyframe", -1)
        # Speech has no single peak: its truth is a range over the step.
        if st.syllable_hz > 0 or k is None or not 0 <= k < len(px):
            continue
        a = ren.frame_to_base(k / clip["fps"])
        p = placed.get(k, px[k]).astype(float) @ a[:, :2].T + a[:, 2]
        if not np.isfinite(p).all():
            continue
        cal = ren.steps[(st.name, st.right_mm, st.left_mm)]
        try:
            moved = synth.solve_forward(p, cal.field, 1.0)
        except RuntimeError:
            continue
        for g in proto.step(st.name).groups:
            res[(st.name, g.name)] = tuple(  # type: ignore[assignment]
                synth.measure_group(g, side, p, moved, face.up, face.mm_per_px)
                for side in ("right", "left")
            )
    return res, float(clip["scale"]["mm_per_px"] / ren.frame_mm_per_px)


def run_case(args: tuple[Case, str]) -> dict:
    """Generate one case, analyse it with the CLI, compare with the truth.

    Every group of every step is compared (primary first); ``label`` is the step
    for the primary group and ``step/group`` for a secondary one. A step the case
    skips must come back ``missing``.
    """
    case, workdir = args
    from movement import synth

    d = Path(workdir) / case.name
    d.mkdir(parents=True, exist_ok=True)
    amps = pattern(case)
    folds = crease_pattern(case) if case.creases else None
    spec = synth.standard_spec(amps, fps=30.0, seed=case.seed, mirrored=case.mirrored,
                               protocol=case.protocol, skip=case.skip, creases=folds,
                               **case.spec)
    t0 = time.perf_counter()
    known = d / "consult.truth.json"
    if os.environ.get("MOVEMENT_BENCH_REUSE") and known.exists() and (d / "consult.mp4").exists():
        truth = json.loads(known.read_text())
    else:
        truth = synth.make_video(spec, d / "consult.mp4")
    gen_s = time.perf_counter() - t0
    extra = ("--mirrored",) if case.mirrored else ()
    if case.protocol != "standard":
        extra += ("--protocol", case.protocol)
    run = run_cli(d / "consult.mp4", d / "out", *extra)
    rows = read_rows(run.out) if run.code == 0 else {}
    peaks = session_peaks(run.out) if run.code == 0 else {}
    at_tracked: dict[tuple[str, str], tuple[float, float]] = {}
    scale_ratio = float("nan")
    if run.code == 0:
        try:
            at_tracked, scale_ratio = tracked_truth(spec, run.out)
        except (OSError, KeyError, ValueError) as e:  # a diagnostic never fails a case
            print(f"{case.name}: truth at the tracked points not read ({e})", file=sys.stderr)
    steps = []
    for st in truth["steps"]:
        for g in st["groups"]:
            tr, tl = float(g["right_mm"]), float(g["left_mm"])
            r = rows.get((st["name"], g["muscle_group"], g["measure"]), {})
            quality = r.get("quality", "error") if run.code == 0 else "error"
            repeated = "movements" in g
            moves = rows.get((st["name"], g["muscle_group"], "movements"), {})
            steps.append(
                dict(
                    step=st["name"],
                    label=st["name"] if g["primary"] else f"{st['name']}/{g['muscle_group']}",
                    primary=bool(g["primary"]),
                    truth=(tr, tl),
                    truth_tracked=at_tracked.get((st["name"], g["muscle_group"]),
                                                 (np.nan, np.nan)),
                    kind=truth_kind(tr, tl),
                    measured=(fnum(r.get("right_mm")), fnum(r.get("left_mm"))),
                    dominant=r.get("dominant_side", "undetermined"),
                    quality=quality,
                    reason=r.get("reason", run.error),
                    # A repeated movement has no single peak to time.
                    peak_truth=float("nan") if repeated else float(st["peak_s"]),
                    peak=peaks.get(st["name"], float("nan")) if g["primary"] else float("nan"),
                    moves_truth=tuple(g["movements"].values()) if repeated else None,
                    moves=(fnum(moves.get("right_mm")), fnum(moves.get("left_mm"))),
                    # 95 % intervals: right, left, right - left (NaN when not given).
                    right_iv=(fnum(r.get("right_lo")), fnum(r.get("right_hi"))),
                    left_iv=(fnum(r.get("left_lo")), fnum(r.get("left_hi"))),
                    diff_iv=(fnum(r.get("diff_lo")), fnum(r.get("diff_hi"))),
                )
            )
    lines = []
    for st in truth["steps"]:
        for c in st.get("creases", []):
            if not case.creases:
                continue
            r = rows.get((st["name"], c["region"], "crease"), {})
            lines.append(dict(
                step=st["name"], region=c["region"], truth=(c["right_depth"], c["left_depth"]),
                kind=crease_kind(c["right_depth"], c["left_depth"]),
                measured=(fnum(r.get("right_mm")), fnum(r.get("left_mm"))),
                dominant=r.get("dominant_side", "undetermined"),
                quality=r.get("quality", "error") if run.code == 0 else "error",
                right_iv=(fnum(r.get("right_lo")), fnum(r.get("right_hi"))),
                left_iv=(fnum(r.get("left_lo")), fnum(r.get("left_hi"))),
            ))
    skipped = []
    for name in case.skip:
        r = next((r for k, r in rows.items() if k[0] == name and r["primary"] == "True"), {})
        skipped.append((name, r.get("quality", "error")))
    return dict(case=case, steps=steps, gen_s=gen_s, run_s=run.seconds, error=run.error,
                skipped=skipped, lines=lines, scale_ratio=scale_ratio)
