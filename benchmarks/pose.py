"""Head-pose benchmark: the same consult rendered as a textured 3D mesh at several poses.

Run by hand from the repository root::

    .venv/bin/python benchmarks/pose.py                     # A: yaw 0, +-10 (sym + asym)
    .venv/bin/python benchmarks/pose.py --set full          # + yaw +-5, +-15, pitch +-10, turn
    .venv/bin/python benchmarks/pose.py --keep /tmp/pose --reuse   # analyse kept videos again
    .venv/bin/python benchmarks/pose.py --set none --depth-sim     # depth error, geometry only
    .venv/bin/python benchmarks/pose.py --set full --raw --depth-sim --write-docs
        # + docs/figures/pose.md and the README's figures table

Each condition is one consult of the standard protocol (:mod:`movement.synth.pose3d`)
analysed with ``movement analyze`` in a subprocess. Per condition and primary step it
prints R-L (right minus left, mm) and its change from the same consult at yaw 0, the
side call and whether it changed, and the resting rows' largest change; ``--raw`` adds
the image-plane reading, ``--depth-sim`` how a depth error moves the face-on values. The targets
(the issue "millimetres on the skin"): each primary R-L within 0.3 mm of its yaw-0
reading at yaw +-5, +-10 and pitch +-10, no call changed; resting rows within 0.5 mm;
at +-15 within 0.5 mm or marked low/unusable with a reason; a 10-degree turn during a
step changes no call.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # for figures, beside this file
from figures import (  # noqa: E402
    RunInfo,
    headline,
    printed,
    publish,
    run_info,
    table,
    write_docs_option,
)

STEPS = ("frown", "raise", "squint", "eee", "smile")
PATTERNS = {
    "sym": {"frown": (2.5, 2.5), "raise": (3.5, 3.5), "squint": (2.0, 2.0),
            "eee": (3.0, 3.0), "smile": (4.5, 4.5)},
    "asym": {"frown": (3.0, 1.6), "raise": (4.2, 2.3), "squint": (2.6, 1.3),
             "eee": (2.0, 3.4), "smile": (6.0, 4.0)},
}
TOL_MM = {"near": 0.3, "far": 0.5, "rest": 0.5}


@dataclass(frozen=True)
class Condition:
    name: str
    yaw: float = 0.0
    pitch: float = 0.0
    turn: float = 0.0
    depth: float = 1.0
    seed: int = 3

    @property
    def tol(self) -> float:
        return TOL_MM["far"] if max(abs(self.yaw), abs(self.pitch)) > 10 else TOL_MM["near"]


SETS = {
    "A": [Condition("yaw0"), Condition("yaw+10", yaw=10), Condition("yaw-10", yaw=-10)],
    "full": [
        Condition("yaw0"), Condition("yaw+5", yaw=5), Condition("yaw-5", yaw=-5),
        Condition("yaw+10", yaw=10), Condition("yaw-10", yaw=-10),
        Condition("pitch+10", pitch=10), Condition("pitch-10", pitch=-10),
        Condition("yaw+15", yaw=15), Condition("yaw-15", yaw=-15),
        Condition("turn+10", turn=10),
        Condition("yaw0-s4", seed=4), Condition("yaw+1", yaw=1), Condition("yaw-1", yaw=-1),
    ],
    "extra": [
        Condition("yaw+5", yaw=5), Condition("yaw-5", yaw=-5),
        Condition("pitch+10", pitch=10), Condition("pitch-10", pitch=-10),
        Condition("turn+10", turn=10), Condition("yaw+15", yaw=15), Condition("yaw-15", yaw=-15),
    ],
    "turn": [Condition("yaw0"), Condition("turn+10", turn=10)],
    "none": [],
    "extra3": [Condition("turn+10", turn=10), Condition("yaw+15", yaw=15),
               Condition("pitch+10", pitch=10)],
    "depth": [Condition("yaw0"), Condition("yaw+10", yaw=10), Condition("yaw-10", yaw=-10),
              Condition("yaw+10-d0.8", yaw=10, depth=0.8),
              Condition("yaw+10-d1.2", yaw=10, depth=1.2),
              Condition("yaw0-d1.2", depth=1.2)],
    "repeat": [Condition("yaw0"), Condition("yaw0-s4", seed=4), Condition("yaw0-s5", seed=5),
               Condition("yaw+1", yaw=1), Condition("yaw-1", yaw=-1)],
}


def render(cond: Condition, pattern: str, video: Path) -> None:
    from movement.synth import standard_spec
    from movement.synth.pose3d import PoseSpec, make_pose_video

    spec = standard_spec(PATTERNS[pattern], fps=30.0, frame_size=(960, 540),
                         noise_sigma=1.5, seed=cond.seed)
    make_pose_video(spec, PoseSpec(yaw_deg=cond.yaw, pitch_deg=cond.pitch,
                                   turn_deg=cond.turn, depth_scale=cond.depth), video)


CODE = ROOT
RENDER_ONLY = False
"""The source tree the analyses run (``--code``: e.g. a copy of the project before a
change, for before/after figures from the same videos)."""


def analyse(video: Path, out: Path, extra: tuple[str, ...] = ()) -> None:
    cmd = [sys.executable, "-c", "from movement.cli import main; main()", "analyze",
           str(video), "--out", str(out), "-q", "--force", *extra]
    env = {**os.environ, "PYTHONPATH": str(CODE)}
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=CODE, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"{video}: analyze failed: {p.stderr.strip().splitlines()[-1:]}")


def task(args: tuple[Condition, str, str, bool, tuple[str, ...], str, str]
         ) -> tuple[str, str, float]:
    global CODE, RENDER_ONLY
    cond, pattern, work, reuse, extra, code, tag = args
    CODE = Path(code)
    RENDER_ONLY = tag == "render-only"
    video = Path(work) / f"{pattern}-{cond.name}.mp4"
    out = Path(work) / f"{pattern}-{cond.name}{'-raw' if extra else ''}{tag}"
    t0 = time.perf_counter()
    if not (reuse and video.exists()):
        render(cond, pattern, video)
    if RENDER_ONLY:
        return cond.name, pattern, time.perf_counter() - t0
    try:
        analyse(video, out, extra)
    except RuntimeError as exc:
        print(f"  {exc}", file=sys.stderr, flush=True)
    return cond.name, pattern, time.perf_counter() - t0


def rows(out: Path) -> dict[tuple[str, str], dict]:
    with open(out / "asymmetry.csv", newline="", encoding="utf-8") as fh:
        return {(r["step"], r["muscle_group"]): r for r in csv.DictReader(fh)}


def f(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        return float("nan")


@dataclass(frozen=True)
class Reference:
    """One pattern's consult facing the camera: per primary step (step, R-L mm, side)."""

    pattern: str
    steps: tuple[tuple[str, float, str], ...]


@dataclass(frozen=True)
class PoseRow:
    """One condition of one pattern against the same consult facing the camera."""

    pattern: str
    cond: Condition
    deltas: tuple[tuple[str, float], ...] = ()  # per primary step: change of R-L, mm
    rest: float = float("nan")  # resting rows' largest change (R, L or R-L; rows not marked)
    changed: tuple[str, ...] = ()  # "step before->after" per changed side call
    marked: tuple[str, ...] = ()  # "step:quality" per primary step not ok
    analysed: bool = True
    # per resting row: (row, change of R, of L, of R-L (mm), quality)
    rest_rows: tuple[tuple[str, float, float, float, str], ...] = ()

    @property
    def worst(self) -> tuple[str, float]:
        """(step, |change|) of the primary step that moved most."""
        return max(((s, abs(d)) for s, d in self.deltas if d == d), key=lambda x: x[1],
                   default=("", 0.0))

    @property
    def ok(self) -> bool:
        return self.worst[1] <= self.cond.tol and not self.changed


@dataclass(frozen=True)
class Reading:
    """A reading's figures: face-on (as analysed) or image plane (``--raw``)."""

    name: str  # "face-on" or "image plane"
    label: str
    refs: tuple[Reference, ...]
    rows: tuple[PoseRow, ...]
    no_reference: tuple[str, ...] = ()  # patterns whose yaw-0 consult was not analysed


def compare(work: Path, conds: list[Condition], name: str, label: str, suffix: str = "",
            patterns: tuple[str, ...] = tuple(PATTERNS)) -> Reading:
    """Each condition's primary R-L, calls and resting rows against yaw 0."""
    refs, out, missing = [], [], []
    for pattern in patterns:
        if not (work / f"{pattern}-yaw0{suffix}" / "asymmetry.csv").exists():
            missing.append(pattern)
            continue
        ref = rows(work / f"{pattern}-yaw0{suffix}")
        prim = {k[0]: r for k, r in ref.items() if r["primary"] == "True"}
        rest = {k: r for k, r in ref.items() if k[0] == "rest"}
        refs.append(Reference(pattern, tuple((s, f(prim[s]["diff_mm"]), prim[s]["dominant_side"])
                                             for s in STEPS if s in prim)))
        for c in conds:
            if c.name == "yaw0":
                continue
            if not (work / f"{pattern}-{c.name}{suffix}" / "asymmetry.csv").exists():
                out.append(PoseRow(pattern, c, analysed=False))
                continue
            got = rows(work / f"{pattern}-{c.name}{suffix}")
            deltas, changed, marked = [], [], []
            for s in STEPS:
                if s not in prim:
                    continue
                r = next(v for k, v in got.items() if k[0] == s and v["primary"] == "True")
                deltas.append((s, f(r["diff_mm"]) - f(prim[s]["diff_mm"])))
                call = r["dominant_side"]
                if call != prim[s]["dominant_side"]:
                    changed.append(f"{s} {prim[s]['dominant_side']}->{call}")
                if r["quality"] != "ok":
                    marked.append(f"{s}:{r['quality']}")
            rrows = tuple(
                (k[1], *(f(got[k][col]) - f(v[col]) for col in ("right_mm", "left_mm",
                                                                 "diff_mm")),
                 got[k]["quality"]) for k, v in rest.items() if k in got)
            rest_d = _nanmax(abs(d) for r in rrows if r[4] == "ok" for d in r[1:4])
            out.append(PoseRow(pattern, c, tuple(deltas), rest_d, tuple(changed),
                               tuple(marked), rest_rows=rrows))
    return Reading(name, label, tuple(refs), tuple(out), tuple(missing))


def print_reading(reading: Reading) -> None:
    """The per-condition table on stdout."""
    print(f"\n== {reading.label}")
    for pattern in reading.no_reference:
        print(f"-- {pattern}: no yaw-0 reading")
    for ref in reading.refs:
        print(f"-- {ref.pattern}: yaw-0 R-L (mm) "
              + "  ".join(f"{s} {rl:+.2f} {side}" for s, rl, side in ref.steps))
        for r in (r for r in reading.rows if r.pattern == ref.pattern):
            if not r.analysed:
                print(f"  {r.cond.name:12s} not analysed")
                continue
            print(f"  {r.cond.name:12s} dRL " + "  ".join(f"{s} {d:+.2f}" for s, d in r.deltas)
                  + f" | worst {r.worst[1]:.2f} (tol {r.cond.tol}) rest {r.rest:.2f}"
                  + f" | calls changed: {', '.join(r.changed) or 'none'}"
                  + (f" | marked {' '.join(r.marked)}" if r.marked else "")
                  + ("" if r.ok else "  MISS"))
            for g, dr, dl, dd, q in r.rest_rows:
                print(f"      rest {g:20s} R {dr:+.2f}  L {dl:+.2f}  R-L {dd:+.2f}"
                      + ("" if q == "ok" else f"  [{q}]")
                      + ("" if q != "ok" or max(abs(dr), abs(dl), abs(dd)) <= TOL_MM["rest"]
                         else "  MISS"))


@dataclass(frozen=True)
class DepthRow:
    """A true depth ``k`` times FaceMesh's at ``yaw``: per primary step (step, face-on
    R-L, imaged R-L), mm; the truth is 0 (the symmetric pattern)."""

    yaw: float
    k: float
    yaw_read: float
    steps: tuple[tuple[str, float, float], ...]


def depth_sensitivity() -> list[DepthRow]:
    """How a depth error moves the face-on values, by geometry alone (no video).

    The true face is ``k`` times as deep as FaceMesh's estimate of the base photo
    (k = 0.8, 1.0, 1.2) and turned by +-10 degrees; the analysis is assumed to see
    FaceMesh's depth unchanged (its prior: the worst case), so it reads the yaw as
    atan(k tan yaw) from the midline and corrects with the unscaled skin normals.
    Printed per primary group: R-L face-on (exact truth: 0 for the symmetric pattern)
    and as imaged.
    """
    import numpy as np

    from movement.analysis import pose
    from movement.analysis.face import measure_series
    from movement.synth import protocol, standard_spec
    from movement.synth.pose3d import PoseRenderer, PoseSpec

    spec = standard_spec(PATTERNS["sym"], fps=30.0, frame_size=(960, 540))
    proto = protocol("standard")
    print("\n== depth sensitivity (geometry only; symmetric pattern, truth R-L = 0)")
    out = []
    for yaw in (10.0, -10.0):
        for k in (0.8, 1.0, 1.2):
            r = PoseRenderer(spec, PoseSpec(yaw_deg=yaw, depth_scale=k))
            mm = r.face.mm_per_px
            est = float(np.degrees(np.arctan(k * np.tan(np.radians(yaw)))))
            head = np.column_stack([r.mesh.base_xy[:468] * (1, -1), r.mesh.depth[:468]]) * mm
            normals = pose.smooth_normals(head[:, :2], head[:, 2])
            c, _ = pose.face_on_matrix(pose.rotation(est, 0.0), normals)
            cells = []
            for st in spec.steps:
                t = st.peak_s
                img = [r.project(u)[0][:468] * (1, -1) * mm / r.scale for u in (0.0, t)]
                grp = proto.step(st.name).primary
                vals = {}
                for name, d in (("face-on", np.einsum("pij,pj->pi", c, img[1] - img[0])),
                                ("imaged", img[1] - img[0])):
                    pos = (img[0] + d)[None]
                    side = {}
                    for sd in ("right", "left"):
                        cols = np.array(grp.points(sd))
                        low = np.array(grp.lower_points(sd)) if grp.lower_points(sd) else None
                        side[sd] = float(measure_series(pos, img[0], grp.kind, cols, low, sd)[0])
                    vals[name] = side["right"] - side["left"]
                cells.append((st.name, vals["face-on"], vals["imaged"]))
            out.append(DepthRow(yaw, k, est, tuple(cells)))
            print(f"  yaw {yaw:+.0f} depth x{k:.1f} (yaw read {est:+.1f}): "
                  + "  ".join(f"{s} {a:+.2f} ({b:+.2f})" for s, a, b in cells))
    return out


# ----------------------------------------------------------------- the generated page

def _group(c: Condition) -> str:
    """Which headline row a condition counts in ("" = none: the depth diagnostics)."""
    if c.depth != 1.0:
        return ""
    if c.turn:
        return "turn"
    if c.seed != 3 or (abs(c.yaw) <= 1 and not c.pitch):
        return "near"
    return "yaw10" if abs(c.yaw) == 10 and not c.pitch else "other"


def _nanmax(values: Iterable[float]) -> float:
    """The largest value that is a number (NaN: a row without that reading)."""
    return max((v for v in values if v == v), default=float("nan"))


def _contradicted(change: str) -> bool:
    """A changed call ("step before->after") that says the opposite, not only less or more
    surely: right, left and balanced swapped (to or from `uncertain` is not)."""
    before, after = change.split(" ", 1)[1].split("->")
    return "uncertain" not in (before, after)


def _worst(rows: list[PoseRow]) -> str:
    """'0.35 mm, 2/20 calls changed (0 contradicted)' over ``rows`` (the tables name the
    step)."""
    changed = [c for r in rows for c in r.changed]
    return (f"{_nanmax(r.worst[1] for r in rows):.2f} mm, {len(changed)}/"
            f"{sum(len(r.deltas) for r in rows)} calls changed"
            + (f" ({sum(map(_contradicted, changed))} contradicted)" if changed else ""))


def _rest_fig(rows: list[PoseRow]) -> str:
    """'0.83 mm, 20/24 within 0.5 mm, 2/24 marked' over ``rows``: the largest change of
    the rows not marked; a row is within when its R, L and R-L all moved by at most the
    rest tolerance and it is not marked."""
    every = [x for r in rows for x in r.rest_rows]
    within = sum(1 for _, dr, dl, dd, q in every
                 if q == "ok" and max(abs(dr), abs(dl), abs(dd)) <= TOL_MM["rest"])
    marked = sum(1 for x in every if x[4] != "ok")
    return (f"{_nanmax(r.rest for r in rows):.2f} mm, {within}/{len(every)} within"
            f" {TOL_MM['rest']} mm, {marked}/{len(every)} marked")


def _angles(conds: Sequence[Condition]) -> str:
    """'yaw ±5°, ±15°; pitch ±10°' for the conditions' constant poses ('turning ±10°'
    for turns during the steps): ± where both signs ran."""
    out = []
    for axis, values in (("yaw", [c.yaw for c in conds]), ("pitch", [c.pitch for c in conds]),
                         ("turning", [c.turn for c in conds])):
        mags = sorted({abs(v) for v in values if v})
        if mags:
            out.append(f"{axis} " + ", ".join(
                ("±" if {m, -m} <= set(values) else "+" if m in values else "-") + f"{m:g}°"
                for m in mags))
    return "; ".join(out)


def headline_rows(readings: list[Reading]) -> list[tuple[str, str]]:
    """The README's rows: per group of conditions that ran, each reading's largest change
    of a primary R-L and the calls changed; at +-10 degrees of yaw also the resting rows."""
    def select(rd: Reading, group: str) -> list[PoseRow]:
        return [r for r in rd.rows if r.analysed and _group(r.cond) == group]

    def per_reading(group: str, fig: Callable[[list[PoseRow]], str]) -> str:
        return "; ".join(f"{rd.name} {fig(sel)}" for rd in readings if (sel := select(rd, group)))

    def angles(group: str) -> str:
        return _angles([r.cond for rd in readings for r in select(rd, group)])

    out = []
    if line := per_reading("near", lambda sel: _worst(sel) + "; resting rows "
                           + f"{_nanmax(r.rest for r in sel):.2f} mm"):
        # What moves the readings without a pose to speak of: the floor the other
        # rows are read against.
        out.append(("facing the camera, rendered again (another noise draw; yaw ±1°): "
                    "largest change", line))
    if line := per_reading("yaw10", _worst):
        out.append((f"head pose, {angles('yaw10')}: largest R−L change vs facing the camera",
                    line))
        out.append((f"head pose, {angles('yaw10')}: resting rows, largest change",
                    per_reading("yaw10", _rest_fig)))
    if line := per_reading("other", _worst):
        out.append((f"head pose, {angles('other')}: largest R−L change", line))
    if line := per_reading("turn", lambda sel: _worst(sel) + ", "
                           + str(sum(len(r.marked) for r in sel)) + " steps marked"):
        out.append((f"head pose, {angles('turn')} during each step: largest R−L change",
                    line))
    return out


def _reading_tables(rd: Reading) -> str:
    cols = [s for s in STEPS if any(s == x for ref in rd.refs for x, _, _ in ref.steps)]
    ref = table(["pattern", *cols], [
        [r.pattern, *(next((f"{rl:+.2f} {side}" for s, rl, side in r.steps if s == c), "")
                      for c in cols)] for r in rd.refs])
    body = []
    for r in rd.rows:
        d = dict(r.deltas)
        body.append([r.pattern, r.cond.name] + (
            [f"{d[c]:+.2f}" if c in d else "" for c in cols]
            + [f"{r.worst[1]:.2f} ({r.worst[0]})", str(r.cond.tol),
               # NaN: every resting row was marked (low), so none is compared.
               f"{r.rest:.2f}" if r.rest == r.rest else "all marked",
               ", ".join(r.changed) or "none", " ".join(r.marked) or "none",
               "yes" if r.ok else "MISS"]
            if r.analysed else ["not analysed"] + [""] * (len(cols) + 5)))
    missing = "".join(f"\nNo yaw-0 reading of the {p} pattern: its conditions are not compared.\n"
                      for p in rd.no_reference)
    rest_body = [[r.pattern, r.cond.name, g, f"{dr:+.2f}", f"{dl:+.2f}", f"{dd:+.2f}",
                  q if q != "ok" else ("yes" if max(abs(dr), abs(dl), abs(dd))
                                       <= TOL_MM["rest"] else "MISS")]
                 for r in rd.rows for g, dr, dl, dd, q in r.rest_rows]
    if rest_body:
        missing += ("\nResting rows: change of each side and of R−L from yaw 0 (mm), and"
                    f" whether all three are within {TOL_MM['rest']} mm (or the row's"
                    " quality when the analysis marked it):\n\n"
                    + table(["pattern", "condition", "row", "R", "L", "R−L", "within"],
                            rest_body))
    return (f"\n## {rd.name[0].upper()}{rd.name[1:]}: {rd.label}\n\n"
            "Facing the camera (yaw 0), R−L (right minus left, mm) and the dominant side of"
            " each primary step:\n\n" + ref
            + "\nEach condition: change of each primary step's R−L from yaw 0 (mm), the"
            " largest (step), its tolerance, the resting rows' largest change (R, L or R−L of"
            " the rows not marked, mm), side calls changed, primary steps not graded ok, and"
            " whether the row is within its tolerance with no call changed:\n\n"
            + table(["pattern", "condition", *cols, "largest", "tolerance", "resting rows",
                     "calls changed", "marked", "within"], body) + missing)


def figures_page(info: RunInfo, readings: list[Reading], depth: list[DepthRow],
                 conds: list[Condition], lines: list[str],
                 extra: Sequence[tuple[str, str]] = ()) -> str:
    """The generated ``docs/figures/pose.md``: what :func:`compare` and
    :func:`depth_sensitivity` returned, and the summary lines as printed."""
    pats = sorted({r.pattern for rd in readings for r in rd.refs}
                  | {p for rd in readings for p in rd.no_reference})
    setup = ""
    if conds:
        setup = (
            "\n## Setup\n\nEach condition is one consult of the standard protocol rendered"
            " as a textured 3D mesh (`movement.synth.pose3d`, 960×540, 30 fps, noise 1.5),"
            " analysed with `movement analyze` in a subprocess; the image-plane reading adds"
            " `--no-pose-correction`. Tolerances (mm): "
            + ", ".join(f"{k} {v}" for k, v in TOL_MM.items())
            + " (far: beyond 10°). Amplitudes per step, right / left mm:\n\n"
            + table(["pattern", *STEPS], [[p, *(f"{PATTERNS[p][s][0]} / {PATTERNS[p][s][1]}"
                                               for s in STEPS)] for p in pats])
            + "\n" + table(["condition", "yaw °", "pitch °", "turn during each step °",
                             "depth ×"],
                            [[c.name, f"{c.yaw:+g}", f"{c.pitch:+g}", f"{c.turn:+g}",
                              f"{c.depth:g}"] for c in conds]))
    parts = [info.header("Head-pose benchmark", extra), headline(headline_rows(readings))
             if readings else "", setup, *(_reading_tables(rd) for rd in readings)]
    if depth:
        cols = [s for s, _, _ in depth[0].steps]
        parts.append(
            "\n## Depth sensitivity (`--depth-sim`)\n\nBy geometry alone (no video): the"
            " symmetric pattern (truth R−L 0) on a face `k` times as deep as FaceMesh's"
            " estimate, turned by the yaw; the analysis is assumed to see FaceMesh's depth"
            " (its yaw read as atan(k tan yaw)). R−L face-on (as imaged), mm:\n\n"
            + table(["yaw °", "depth ×", "yaw read °", *cols],
                    [[f"{d.yaw:+g}", f"{d.k:.1f}", f"{d.yaw_read:+.1f}",
                      *(f"{a:+.2f} ({b:+.2f})" for _, a, b in d.steps)] for d in depth]))
    parts.append(printed(lines))
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", default="A", choices=sorted(SETS),
                    help="conditions (none: no video, e.g. with --depth-sim)")
    ap.add_argument("--keep", type=Path, help="keep videos and outputs in this folder")
    ap.add_argument("--reuse", action="store_true", help="reuse kept videos")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--code", type=Path, default=ROOT,
                    help="source tree the analyses run (default: this one)")
    ap.add_argument("--patterns", default="sym,asym",
                    help="amplitude patterns to render (sym, asym)")
    ap.add_argument("--tag", default="",
                    help="suffix of the output folders (e.g. -before), videos shared")
    ap.add_argument("--render-only", action="store_true", help="only render the videos")
    ap.add_argument("--report-only", action="store_true",
                    help="only print the tables of kept outputs")
    ap.add_argument("--raw", action="store_true",
                    help="also analyse with --no-pose-correction (the image-plane reading)")
    ap.add_argument("--depth-sim", action="store_true",
                    help="also the depth-error sensitivity, by geometry (no video)")
    write_docs_option(ap, "pose", "tables")
    argv = sys.argv[1:] if argv is None else list(argv)
    a = ap.parse_args(argv)
    pats = [p for p in a.patterns.split(",") if p]
    if unknown := [p for p in pats if p not in PATTERNS]:
        ap.error(f"unknown pattern {', '.join(unknown)} (known: {', '.join(PATTERNS)})")
    if a.jobs < 1:
        ap.error("--jobs must be at least 1")
    if not SETS[a.set] and not a.depth_sim:
        ap.error("--set none runs no video: add --depth-sim")
    if a.write_docs and a.render_only:
        ap.error("--write-docs needs the analyses: not with --render-only")
    info = run_info("benchmarks/pose.py", argv)
    conds = SETS[a.set]
    readings: list[Reading] = []
    t0 = time.perf_counter()
    if conds:
        readings = videos(a, conds, pats)
        if a.render_only:
            return 0
    depth = depth_sensitivity() if a.depth_sim else []
    minutes = (time.perf_counter() - t0) / 60
    lines = [f"POSE {what}: {fig}" for what, fig in headline_rows(readings)]
    if lines:
        print("\n" + "\n".join(lines))
    if a.write_docs:
        extra = [("run time", f"{minutes:.1f} min, --jobs {a.jobs}"),
                 ("code measured", f"`{a.code.resolve()}`"
                  + (f", output folders tagged `{a.tag}`" if a.tag else "")),
                 ("conditions", f"set {a.set}: " + (", ".join(c.name for c in conds) or "none")
                  + (f"; patterns {', '.join(pats)}" if conds else ""))]
        publish(a.write_docs, figures_page(info, readings, depth, conds, lines, extra))
    return 0


def videos(a: argparse.Namespace, conds: list[Condition], pats: list[str]) -> list[Reading]:
    """Render and analyse each condition (as ``a`` asks) and print the tables."""
    work = a.keep or Path(tempfile.mkdtemp(prefix="pose-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    variants: list[tuple[str, ...]] = [()]
    if a.raw:
        variants.append(("--no-pose-correction",))
    code = str(a.code.resolve())
    tag = "render-only" if a.render_only else a.tag
    tasks = [(c, p, str(work), a.reuse, ex, code, tag)
             for ex in variants for c in conds for p in pats]
    t0 = time.perf_counter()
    # Renders first (the analyses of one video reuse it).
    with ProcessPoolExecutor(max_workers=a.jobs) as pool:
        first = [t for t in tasks if not t[4]]
        rest = [(c, p, w, True, ex, cd, tg) for c, p, w, _, ex, cd, tg in tasks if ex]
        if a.report_only:
            first = rest = []
        if a.render_only:
            rest = []
        for name, pat, sec in pool.map(task, first):
            print(f"  {pat}-{name}: {sec:.0f} s", flush=True)
        for name, pat, sec in pool.map(task, rest):
            print(f"  {pat}-{name} (raw): {sec:.0f} s", flush=True)
    print(f"pose benchmark, set {a.set}, {time.perf_counter() - t0:.0f} s, work {work}")
    if a.render_only:
        return []
    readings = [compare(work, conds, "face-on",
                        "as analysed (pose-corrected when the analysis corrects)", a.tag,
                        tuple(pats))]
    if a.raw:
        readings.append(compare(work, conds, "image plane",
                                "image-plane reading (--no-pose-correction)",
                                suffix="-raw" + a.tag, patterns=tuple(pats)))
    for rd in readings:
        print_reading(rd)
    return readings


if __name__ == "__main__":
    raise SystemExit(main())
