"""How much of a step's movement a Lucas-Kanade window can read, whatever the texture.

Run by hand (about a minute):

    .venv/bin/python benchmarks/window_floor.py

The extended sample's steps are rendered without noise, head motion or lines, and
the primary group's points are read between a rest frame and the peak with the
tracker's own window (``imagetrack.LK_WIN_MM``), started at the truth, on three
pictures of the same movement:

  photo  the generated frames (the face photo's own texture);
  ideal  the same warp of a canvas of fine random texture (every window textured);
  shift  the rest frame shifted by the point's true displacement (no deformation).

Printed per step: the median over the points of the reading along the truth over
the truth, for the single window at the point and for the point's ring of
sub-points fused as the tracker fuses them (``imagetrack._fuse``). ``shift`` near
1 shows the window itself is unbiased; ``ideal`` below 1 is what averaging the
movement over the window (and the ring) loses where the field peaks within a few
mm: no texture recovers it. The extended fields are narrow (sigmas 5-8 mm, against
10-18 for the raise and smile), which is why their steps read short (docs/METHOD.md §7.7).

Not modelled: the affine patch match that refines the groups marked ``affine`` (the
frown's and the scrunch's, docs/METHOD.md §7.5), compression, and the frames between
rest and peak (the tracker starts each frame from the last, not from the truth).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from movement import synth
from movement.analysis import imagetrack as it

MIN_TRUTH_MM = 0.3
"""Points that move less than this are left out (their ratio is noise)."""


def _lk(img0: np.ndarray, img1: np.ndarray, p0: np.ndarray, win: int) -> np.ndarray:
    p0 = p0.astype(np.float32).reshape(-1, 1, 2)
    p1, _, _ = cv2.calcOpticalFlowPyrLK(
        img0, img1, p0, p0.copy(), winSize=(win, win), maxLevel=it.LK_LEVELS,
        criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01),
    )
    return (p1 - p0).reshape(-1, 2)


def _ratios(
    g0: np.ndarray, g1: np.ndarray, pts: np.ndarray, truth: np.ndarray, win: int,
    offsets: np.ndarray,
) -> tuple[float, float]:
    """Median (over points) reading / truth: single window, and the fused ring."""
    single, ring = [], []
    for p, d in zip(pts, truth, strict=True):
        u = d / np.linalg.norm(d)
        single.append(float(_lk(g0, g1, p[None], win)[0] @ u) / np.linalg.norm(d))
        sub = p + offsets
        disp = _lk(g0, g1, sub, win)
        tens = it._structure_tensors(g0, sub.astype(np.float32), win)
        fused = it._fuse(disp[None].astype(float), tens[None], np.ones((1, len(sub)), bool))[0]
        ring.append(float(fused @ u) / np.linalg.norm(d))
    return float(np.median(single)), float(np.median(ring))


@dataclasses.dataclass(frozen=True)
class Floor:
    """One step's readings (median over points of reading / truth)."""

    step: str
    group: str
    points: int
    truth_mm: float  # median over the points
    photo: tuple[float, float]  # (single window, fused ring)
    ideal: tuple[float, float]
    shift: tuple[float, float]


def floors() -> tuple[str, list[Floor]]:
    """A header line and one :class:`Floor` per step of the extended sample."""
    spec = synth.extended_sample_spec()
    spec = dataclasses.replace(
        spec, noise_sigma=0.0, roll_deg=0.0, shift_px=0.0, zoom=0.0,
        steps=tuple(dataclasses.replace(s, crease_right=0.0, crease_left=0.0)
                    for s in spec.steps),
    )
    ren = synth.Renderer(spec)
    face = ren.face
    mm_px = ren.frame_mm_per_px
    win = int(np.clip(2 * round(it.LK_WIN_MM / mm_px / 2) + 1, it.LK_WIN_MIN_PX, 21))
    offsets = it.RING * (it.RING_MM / mm_px)
    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 255, face.canvas.shape[:2]).astype(np.float32)
    # Fine but resolved at the frame's scale (a few canvas pixels per grain).
    ideal = cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 1.5), None, 0, 255, cv2.NORM_MINMAX)
    photo = cv2.cvtColor(face.canvas, cv2.COLOR_BGR2GRAY).astype(np.float32)
    proto = synth.protocol(spec.protocol)

    def render(canvas: np.ndarray, t: float) -> np.ndarray:
        img = cv2.remap(canvas, ren.source_map(t), None, cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REFLECT)
        return np.clip(np.round(img), 0, 255).astype(np.uint8)

    header = (f"extended sample, {spec.frame_size[0]}x{spec.frame_size[1]}, {mm_px:.3f} mm/px, "
              f"LK window {win} px ({win * mm_px:.1f} mm), ring {it.RING_MM} / {2 * it.RING_MM} mm")
    out = []
    for st in spec.steps:
        step = proto.step(st.name)
        g = step.primary
        if step.mode != "peak" or g.kind == "aperture":
            continue  # the speech has no single peak; lids are read from landmarks
        cal = ren.steps[(st.name, st.right_mm, st.left_mm)]
        t0, t1 = st.start_s - 0.5, st.peak_s
        if ren.activation(t0)[1] != 0.0 or ren.activation(t1)[1] != 1.0:
            raise RuntimeError(f"{st.name}: rest or peak frame not where expected")
        base = face.landmarks[list(g.points("right") + g.points("left"))]
        p0 = ren.base_to_frame(t0, base)
        truth = ren.base_to_frame(t1, synth.solve_forward(base, cal.field, 1.0)) - p0
        keep = np.linalg.norm(truth, axis=1) * mm_px >= MIN_TRUTH_MM
        p0, truth = p0[keep], truth[keep]
        cols = [_ratios(render(c, t0), render(c, t1), p0, truth, win, offsets)
                for c in (photo, ideal)]
        g0 = render(photo, t0)
        shifted = []
        for p, d in zip(p0, truth, strict=True):
            m = np.float32([[1, 0, d[0]], [0, 1, d[1]]])
            g1 = cv2.warpAffine(g0, m, g0.shape[::-1], flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT)
            shifted.append(_ratios(g0, g1, p[None], d[None], win, offsets))
        sh = np.median(np.array(shifted), axis=0)
        tmm = float(np.median(np.linalg.norm(truth, axis=1))) * mm_px
        out.append(Floor(st.name, g.name, len(p0), tmm, cols[0], cols[1],
                         (float(sh[0]), float(sh[1]))))
    return header, out


def main() -> None:
    header, rows = floors()
    print(header)
    print("read / truth along the truth, median over the primary group's points "
          "(single window | fused ring)")
    print(f"{'step':12s} {'group':24s} {'pts':>3s} {'truth mm':>9s}   {'photo':>11s}"
          f"   {'ideal':>11s}   {'shift':>11s}")
    for r in rows:
        print(f"{r.step:12s} {r.group:24s} {r.points:3d} {r.truth_mm:9.2f}   "
              + "   ".join(f"{a:.2f} | {b:.2f}" for a, b in (r.photo, r.ideal, r.shift)))


if __name__ == "__main__":
    main()
