"""Lines benchmark: the crease index on several faces, per face, per region.

Each consult is one step of the generator (``movement.synth``) on one face at one
frame size: a few rest frames, then the peak, with folds of known depth per side
drawn with seeded variety (count, spacing, width, length, angle; depths up to 0.9)
or with no folds at all under lighting drift, blur or JPEG. FaceMesh finds the
landmarks of every frame and :func:`movement.analysis.creases.step_lines` reads
the region per side, as the analysis does for a consult's step. No video is
written: the figures are those of the line measure on the faces, not of finding
the steps (benchmarks/accuracy.py runs whole consults).

Reported per face and overall, and per region:

- deeper side right: share of clearly different pairs (one side at least 1.6 times
  the other and at least 0.12 deep) named by the protocol's crease rule;
- Spearman between each side's true depth and its index, per region and face;
- false calls: fold-free consults where a side is named deeper, and pairs of equal
  depth where one is;
- not saturated: the index at depth 0.9 above that at 0.6, and 0.6 above 0.3.

Run: ``python benchmarks/lines.py [--faces NAMES] [--jobs N] [--write-docs]``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.cases import RANGES, REAL_CLIP, SECOND_FACE_FRAME  # noqa: E402
from benchmarks.figures import (  # noqa: E402
    headline,
    printed,
    publish,
    run_info,
    table,
    write_docs_option,
)

FACES_DIR = ROOT / "benchmarks" / "faces"
FACES: dict[str, str] = {
    "astronaut": "astronaut",
    "clip": f"{REAL_CLIP}@{SECOND_FACE_FRAME}",
    "older": str(FACES_DIR / "older_man_biden.jpg"),
    "darker": str(FACES_DIR / "dark_skin_obama.jpg"),
}
"""The faces (benchmarks/faces/SOURCES.md): the generator's default, a real clip's
frame (skipped when ../shared is absent), an older man with etched lines at rest,
darker skin."""
SIZES: dict[str, tuple[int, int]] = {"720p": (1280, 720), "1080p": (1920, 1080)}
LINE_STEPS: dict[str, str] = {"raise": "forehead", "frown": "glabella",
                              "squint": "crow_feet", "smile": "crow_feet"}
"""Steps with lines in the standard protocol and the region each folds."""
KINDS = ("right", "left", "balanced")
DECISIVE = 1.6
"""A pair is clearly different when the deeper side is this many times the other."""
MIN_DEEP = 0.12
DEPTHS = (0.2, 0.9)
"""Range the deeper side's fold depth is drawn from."""
LADDER = (0.3, 0.6, 0.9)
"""Symmetric depths each face is read at, to see deep folds read deeper."""
NOT_SATURATED = 1.15
"""Each rung of the ladder must read at least this many times the one below."""
CONDITIONS: dict[str, dict[str, float]] = {
    "clean": dict(noise_sigma=1.0),
    "light": dict(noise_sigma=1.0, light_drift=0.25),
    "blur": dict(noise_sigma=1.0, blur_sigma=1.2),
    "jpeg": dict(noise_sigma=3.0, jpeg_quality=35),
}
"""Fold-free consults are read under each of these (fold pairs: clean)."""
MOTION = dict(roll_deg=1.5, shift_px=6.0, zoom=0.01)
"""Mild head motion in every consult: the regions are placed per frame."""
REST_FRAMES = (3, 10, 17, 24)
PEAK_FRAMES = (56, 60, 64)
FPS = 30.0
START_S, PEAK_S, END_S, DURATION_S = 1.0, 2.0, 3.0, 3.3


@dataclass(frozen=True)
class Consult:
    """One step on one face: movement per side (mm), folds per side, condition."""

    face: str
    size: str
    step: str
    kind: str  # right | left | balanced | none | ladder
    mm: tuple[float, float]
    depth: tuple[float, float]
    variant: int
    condition: str
    seed: int


@dataclass(frozen=True)
class Result:
    consult: Consult
    value: tuple[float, float]  # index per side (NaN: not readable)
    rest: tuple[float, float]
    usable: bool
    call: str  # right | left | balanced | uncertain | unusable
    reason: str = ""


def consults(face: str, size: str, seed0: int) -> list[Consult]:
    """The seeded consults of one face at one frame size."""
    rng = np.random.default_rng(seed0)
    out = []
    for i, step in enumerate(LINE_STEPS):
        lo, hi = RANGES[step]

        def mm(lo: float = lo, hi: float = hi) -> tuple[float, float]:
            a, b = rng.uniform(lo + 0.4 * (hi - lo), hi, 2)
            return round(float(a), 2), round(float(b), 2)

        for j, kind in enumerate(KINDS):
            big = float(rng.uniform(*DEPTHS))
            if kind == "balanced":
                pair = (big, big)
            else:
                small = float(rng.uniform(0.03, big / DECISIVE))
                pair = (big, small) if kind == "right" else (small, big)
            out.append(Consult(face, size, step, kind, mm(), (round(pair[0], 3),
                               round(pair[1], 3)), int(rng.integers(1, 10_000)), "clean",
                               seed0 + 10 * i + j))
        conds = list(CONDITIONS)
        for j in (0, 2):
            cond = conds[(i + j + seed0) % len(conds)]
            out.append(Consult(face, size, step, "none", mm(), (0.0, 0.0), 0, cond,
                               seed0 + 10 * i + 5 + j))
    if size == "720p":
        for i, step in enumerate(("raise", "squint")):
            lo, hi = RANGES[step]
            m = round((lo + hi) / 2 + 0.2 * (hi - lo), 2)
            v = int(rng.integers(1, 10_000))
            out += [Consult(face, size, step, "ladder", (m, m), (d, d), v, "clean",
                            seed0 + 100 + 10 * i) for d in LADDER]
    return out


class _Mesh:
    """One static FaceMesh for the process (one detection per frame)."""

    def __init__(self) -> None:
        import mediapipe as mp

        self.mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, refine_landmarks=True, max_num_faces=1)

    def __call__(self, bgr: np.ndarray) -> np.ndarray | None:
        import cv2

        h, w = bgr.shape[:2]
        res = self.mesh.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if not res.multi_face_landmarks:
            return None
        pts = res.multi_face_landmarks[0].landmark
        return np.array([[p.x * w, p.y * h] for p in pts], dtype=float)


_MESH: _Mesh | None = None


def run_consult(c: Consult) -> Result:
    """Render the consult's rest and peak frames and read the step's region per side."""
    import cv2

    from movement import synth
    from movement.analysis.creases import SIDES, LineFrame, line_flags, step_lines
    from movement.analysis.dominance import _crease_call
    from movement.protocol import load_protocol

    global _MESH
    if _MESH is None:
        _MESH = _Mesh()
    proto = load_protocol("standard")
    step = proto.step(c.step)
    region = next(r for r in step.creases if r.name == LINE_STEPS[c.step])
    extra = dict(CONDITIONS[c.condition])
    for _ in range(5):
        spec = synth.SynthSpec(
            steps=(synth.StepMotion(c.step, START_S, PEAK_S, END_S, c.mm[0], c.mm[1],
                                    crease_right=c.depth[0], crease_left=c.depth[1],
                                    crease_variant=c.variant),),
            duration_s=DURATION_S, fps=FPS, frame_size=SIZES[c.size], seed=c.seed,
            face=FACES[c.face], **MOTION, **extra)  # type: ignore[arg-type]
        try:
            ren = synth.Renderer(spec)
            break
        except ValueError:
            # A face with narrower eyes (or a shorter brow) holds less movement
            # before the generator's warp folds: the same pattern, smaller.
            c = replace(c, mm=(round(0.8 * c.mm[0], 2), round(0.8 * c.mm[1], 2)))
    else:
        nan = (math.nan, math.nan)
        return Result(c, nan, nan, False, "unusable", "generator: movement too large")

    def frames(idx: Sequence[int]) -> list[LineFrame]:
        out = []
        for i in idx:
            img = ren.frame(i)
            lm = _MESH(img)  # type: ignore[misc]
            if lm is not None:
                out.append(LineFrame(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), lm))
        return out

    rest, peak = frames(REST_FRAMES), frames(PEAK_FRAMES)
    if not rest or not peak:
        nan = (math.nan, math.nan)
        return Result(c, nan, nan, False, "unusable", "no face found")
    got = {s: step_lines(rest, peak, region, s) for s in SIDES}
    value = (got["right"].value, got["left"].value)
    rests = (got["right"].rest, got["left"].rest)
    flags = [f for s in SIDES for f in line_flags(got[s])]
    bad = [f for f in flags if f.startswith("region unreadable")]
    if bad or not np.isfinite(value).all():
        return Result(c, value, rests, False, "unusable", bad[0] if bad else "not read")
    # The protocol's rule over each side's 95 % interval, as the analysis calls it.
    iv = [(got[s].lo, got[s].hi) if np.isfinite([got[s].lo, got[s].hi]).all()
          else (got[s].value, got[s].value) for s in SIDES]
    call = _crease_call(iv[0], iv[1], proto.thresholds)
    return Result(c, value, rests, True, call, flags[0] if flags else "")


def _run_face(args: tuple[str, tuple[str, ...]]) -> list[Result]:
    face, sizes = args
    out = []
    for size in sizes:
        # Small seeds: the renderer seeds OpenCV's RNG with seed * 1_000_003 + frame.
        seed0 = 1 + 300 * list(FACES).index(face) + 150 * list(SIZES).index(size)
        for c in consults(face, size, seed0):
            r = run_consult(c)
            out.append(r)
            print(_line(r), flush=True)
    return out


def _line(r: Result) -> str:
    c = r.consult
    return (f"{c.face:9s} {c.size:5s} {c.step:6s} {c.kind:8s} {c.condition:5s} "
            f"depth {c.depth[0]:.2f}/{c.depth[1]:.2f} mm {c.mm[0]:.1f}/{c.mm[1]:.1f} -> "
            f"{r.value[0]:6.2f}/{r.value[1]:6.2f} (rest {r.rest[0]:5.2f}/{r.rest[1]:5.2f}) "
            f"{r.call}" + (f" [{r.reason[:70]}]" if r.reason else ""))


# ----------------------------------------------------------------------------- scoring


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Rank correlation (average ranks for ties); NaN with fewer than 3 pairs."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3:
        return math.nan

    def ranks(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for u in np.unique(v):
            m = v == u
            r[m] = r[m].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def clear_kind(d: tuple[float, float]) -> str:
    hi, lo = max(d), min(d)
    if hi >= MIN_DEEP and hi >= DECISIVE * lo and d[0] != d[1]:
        return "right" if d[0] > d[1] else "left"
    return ""


@dataclass(frozen=True)
class Score:
    """The figures of one group of results (a face, a region, or all)."""

    decisive: int
    right: int
    unusable: int
    spearman: dict[str, float]  # region -> rho
    fold_free: int
    false_calls: int
    ladder_rungs: int
    ladder_ok: int
    balanced: int = 0  # pairs of equal depth
    balanced_sided: int = 0  # ... of which a side was named deeper

    @property
    def right_pct(self) -> float:
        return 100.0 * self.right / self.decisive if self.decisive else math.nan

    @property
    def worst_rho(self) -> float:
        v = [r for r in self.spearman.values() if np.isfinite(r)]
        return min(v) if v else math.nan


def score(results: Sequence[Result], by_face: bool = True) -> Score:
    fold = [r for r in results if r.consult.kind in KINDS]
    dec = [r for r in fold if clear_kind(r.consult.depth)]
    right = sum(r.call == clear_kind(r.consult.depth) for r in dec)
    unusable = sum(r.call == "unusable" for r in dec)
    rho = {}
    for region in sorted(set(LINE_STEPS.values())):
        rs = [r for r in fold if LINE_STEPS[r.consult.step] == region]
        if by_face:
            # Per face, then the worst: one face's scale must not mask another's order.
            vals = []
            for face in sorted({r.consult.face for r in rs}):
                f = [r for r in rs if r.consult.face == face]
                vals.append(spearman([d for r in f for d in r.consult.depth],
                                     [v for r in f for v in r.value]))
            ok = [v for v in vals if np.isfinite(v)]
            rho[region] = min(ok) if ok else math.nan
        else:
            rho[region] = spearman([d for r in rs for d in r.consult.depth],
                                   [v for r in rs for v in r.value])
    free = [r for r in results if r.consult.kind == "none"]
    false = sum(r.call in ("right", "left") for r in free)
    rungs = ok = 0
    lad = [r for r in results if r.consult.kind == "ladder"]
    for key in sorted({(r.consult.face, r.consult.step) for r in lad}):
        rs = sorted((r for r in lad if (r.consult.face, r.consult.step) == key),
                    key=lambda r: r.consult.depth[0])
        for lo, hi in zip(rs, rs[1:], strict=False):
            for s in (0, 1):
                rungs += 1
                ok += bool(hi.usable and lo.usable
                           and hi.value[s] >= NOT_SATURATED * max(lo.value[s], 0.0)
                           and hi.value[s] > 0)
    bal = [r for r in fold if r.consult.kind == "balanced"]
    sided = sum(r.call in ("right", "left") for r in bal)
    return Score(len(dec), right, unusable, rho, len(free), false, rungs, ok, len(bal), sided)


def summary_rows(results: Sequence[Result]) -> list[list[str]]:
    rows = []
    groups = [(f, [r for r in results if r.consult.face == f])
              for f in FACES if any(r.consult.face == f for r in results)]
    for name, rs in [*groups, ("all", list(results))]:
        s = score(rs, by_face=name != "all")
        rows.append([
            name, f"{s.right}/{s.decisive} ({s.right_pct:.0f} %)", str(s.unusable),
            *(f"{s.spearman.get(reg, math.nan):.2f}" for reg in REGIONS),
            f"{s.false_calls}/{s.fold_free}", f"{s.balanced_sided}/{s.balanced}",
            f"{s.ladder_ok}/{s.ladder_rungs}",
        ])
    return rows


REGIONS = ("forehead", "glabella", "crow_feet")
HEADER = ["face", "deeper side right", "of which unusable", "rho forehead",
          "rho glabella", "rho crow's feet", "false calls (fold-free)",
          "equal folds, a side named", "deeper reads deeper"]


def region_rows(results: Sequence[Result]) -> list[list[str]]:
    rows = []
    for step, region in LINE_STEPS.items():
        rs = [r for r in results if r.consult.step == step]
        s = score(rs)
        rows.append([f"{step} ({region})", f"{s.right}/{s.decisive} ({s.right_pct:.0f} %)",
                     str(s.unusable), f"{s.false_calls}/{s.fold_free}",
                     f"{s.ladder_ok}/{s.ladder_rungs}"])
    return rows


def size_rows(results: Sequence[Result]) -> list[list[str]]:
    rows = []
    for size in SIZES:
        rs = [r for r in results if r.consult.size == size]
        if rs:
            s = score(rs)
            rows.append([size, f"{s.right}/{s.decisive} ({s.right_pct:.0f} %)",
                         str(s.unusable), f"{s.false_calls}/{s.fold_free}"])
    return rows


def summary_lines(results: Sequence[Result]) -> list[str]:
    s = score(results)
    return [
        f"LINES deeper side right: {s.right}/{s.decisive} ({s.right_pct:.0f} %), "
        f"{s.unusable} unusable",
        "LINES Spearman per region (worst face): "
        + ", ".join(f"{k} {v:.2f}" for k, v in s.spearman.items()),
        f"LINES false calls on fold-free consults: {s.false_calls}/{s.fold_free}",
        f"LINES equal folds read with a side deeper: {s.balanced_sided}/{s.balanced}",
        f"LINES deeper folds read deeper: {s.ladder_ok}/{s.ladder_rungs} rungs",
    ]


def figures_page(info: object, results: Sequence[Result], lines: list[str],
                 extra: list[tuple[str, str]]) -> str:
    s = score(results)
    faces = sorted({r.consult.face for r in results}, key=list(FACES).index)
    parts = [
        info.header("Lines benchmark", extra),  # type: ignore[attr-defined]
        headline([
            ("crease: deeper side right (clearly different pairs)",
             f"{s.right_pct:.0f} % of {s.decisive}, {len(faces)} faces"),
            ("crease: Spearman with fold depth, worst region and face", f"{s.worst_rho:.2f}"),
            ("crease: false calls, fold-free consults", f"{s.false_calls} of {s.fold_free}"),
            ("crease: equal folds read with a side deeper",
             f"{s.balanced_sided} of {s.balanced}"),
        ]),
        "\n## Per face\n\nSpearman per region within the face; `all`: over every face's "
        "sides together.\n\n" + table(HEADER, summary_rows(results)),
        "\n## Per step\n\n" + table(["step", "deeper side right", "of which unusable",
                                     "false calls", "deeper reads deeper"],
                                    region_rows(results)),
        "\n## Per frame size\n\n" + table(["frame", "deeper side right", "of which unusable",
                                           "false calls"], size_rows(results)),
        "\n## Every consult\n\n" + table(
            ["face", "frame", "step", "kind", "condition", "depth R/L", "mm R/L", "index R/L",
             "rest R/L", "call"],
            [[r.consult.face, r.consult.size, r.consult.step, r.consult.kind,
              r.consult.condition, f"{r.consult.depth[0]:.2f}/{r.consult.depth[1]:.2f}",
              f"{r.consult.mm[0]:.1f}/{r.consult.mm[1]:.1f}",
              f"{r.value[0]:.2f}/{r.value[1]:.2f}", f"{r.rest[0]:.2f}/{r.rest[1]:.2f}",
              r.call + (f": {r.reason}" if r.reason else "")] for r in results]),
        printed(lines),
    ]
    return "\n".join(parts)


def main(argv: list[str] | None = None, say: Callable[[str], None] = print) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--faces", default=",".join(FACES),
                    help=f"comma-separated faces (default all: {', '.join(FACES)})")
    ap.add_argument("--sizes", default=",".join(SIZES), help="frame sizes (720p,1080p)")
    ap.add_argument("--jobs", type=int, default=1, help="processes (one face each)")
    write_docs_option(ap, "lines", "tables")
    argv = sys.argv[1:] if argv is None else list(argv)
    a = ap.parse_args(argv)
    faces = [f for f in a.faces.split(",") if f]
    sizes = tuple(s for s in a.sizes.split(",") if s)
    if bad := [f for f in faces if f not in FACES]:
        ap.error(f"unknown face {', '.join(bad)} (known: {', '.join(FACES)})")
    if bad := [s for s in sizes if s not in SIZES]:
        ap.error(f"unknown size {', '.join(bad)} (known: {', '.join(SIZES)})")
    if a.jobs < 1:
        ap.error("--jobs must be at least 1")
    if "clip" in faces and not REAL_CLIP.exists():
        say(f"skipping the clip face: {REAL_CLIP} not found")
        faces.remove("clip")
    info = run_info("benchmarks/lines.py", argv)
    t0 = time.perf_counter()
    jobs = [(f, sizes) for f in faces]
    if a.jobs > 1:
        from multiprocessing import get_context

        with get_context("spawn").Pool(a.jobs) as pool:
            parts = pool.map(_run_face, jobs, chunksize=1)
    else:
        parts = [_run_face(j) for j in jobs]
    results = [r for p in parts for r in p]
    results.sort(key=lambda r: (list(FACES).index(r.consult.face), r.consult.size))
    minutes = (time.perf_counter() - t0) / 60
    say("\n" + table(HEADER, summary_rows(results)))
    say("\n" + table(["step", "deeper side right", "of which unusable", "false calls",
                      "deeper reads deeper"], region_rows(results)))
    say("\n" + table(["frame", "deeper side right", "of which unusable", "false calls"],
                     size_rows(results)))
    lines = summary_lines(results)
    say("\n" + "\n".join(lines))
    if a.write_docs:
        extra = [("run time", f"{minutes:.1f} min, --jobs {a.jobs}"),
                 ("faces", ", ".join(faces) + f"; frames {', '.join(sizes)}")]
        publish(a.write_docs, figures_page(info, results, lines, extra))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
