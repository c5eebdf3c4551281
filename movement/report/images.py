"""The session report's face images: the rest and peak frames with the measured
points and displacement arrows, the dynamic-line heat maps and the frame
viewer's thumbnails, each a JPEG data URI (the report makes no request).

Everything here draws from the session's records (tracked points, the frame
cache); nothing is measured again.
"""

from __future__ import annotations

import base64
import warnings
from dataclasses import dataclass

import cv2
import numpy as np

from movement.analysis.activation import LineReading, StepResult
from movement.analysis.creases import draw_heat
from movement.analysis.landmarks import FrameCache
from movement.analysis.pipeline import ClipResult, Session
from movement.report.figures import SIDE_COLOUR

ARROW_GAIN = 3.0
"""Displacement arrows are drawn this many times longer than the movement so
that 1-2 mm is visible on a face a few hundred pixels tall."""
FRAME_HEIGHT = 320
LINES_HEIGHT = 220
"""Height (px) of the rest and peak frames (cut to the step's region)."""
REGION_MIN_MM = 110.0
REGION_ASPECT = 1.4
"""The rest and peak frames show the step's region: at least this wide (mm),
width / height = REGION_ASPECT."""
THUMB_HEIGHT = 160
"""Height (px) of the frame-viewer thumbnails."""
THUMB_STEP_S = 0.1
THUMBS_PER_STEP = 40
"""Thumbnails every THUMB_STEP_S seconds of a step's window, at most this many
per step (about 7 kB each), so a whole consult adds well under 2 MB."""


def _bgr(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (5, 3, 1))  # type: ignore[return-value]


def _jpeg(img: np.ndarray, quality: int) -> str:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode() if ok else ""


def _rest_peak_arrows(
    r: StepResult, clip: ClipResult, session: Session, frame: int
) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """Arrows for the peak frame: (side, rest points, arrow start, arrow end) in image px.

    Length: the measured value of that side (the table's number) × ARROW_GAIN.
    Direction: what the measurement defines -- along the face's up axis for
    ``up``/``down`` values, and for eyelids the upper lid down and the lower lid
    up (the closing split between them as the landmark model sees it); for
    ``length`` values (a displacement in any direction) the mean movement of the
    points as the value's sensor measured it (``StepResult.displacement_mm``;
    the head-stabilised landmark trajectories where it is absent).
    Start: where the points would sit at rest in the peak frame's head pose.
    """
    step = session.options.protocol.step(r.window.name)
    traj, mmpp = clip.traj, clip.scale.mm_per_px
    rest = [f for f in r.window.rest if 0 <= f < len(traj.mm)]
    peak = [f for f in r.peak_frames if 0 <= f < len(traj.mm)]
    if not rest or not peak or not 0 <= frame < len(traj.mm):
        return []
    th = np.radians(traj.roll_deg[frame])
    lat = np.array([np.cos(th), -np.sin(th)])
    up = np.array([lat[1], -lat[0]])
    px_per_mm = traj.zoom[frame] / mmpp if np.isfinite(traj.zoom[frame]) else np.nan
    values = {(m.muscle_group, m.side): m.activation_mm for m in r.measures}
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for g in step.groups:
            for side in ("right", "left"):
                peak_px = r.peak_points_px.get(f"{g.name}:{side}")
                val = values.get((g.name, side), np.nan)
                if peak_px is None or not (np.isfinite(px_per_mm) and np.isfinite(val)):
                    continue
                sets = [list(g.points(side))]
                if g.kind == "aperture":
                    sets.append(list(g.lower_points(side)))
                disp = [
                    np.nanmean(traj.mm[peak][:, s], axis=(0, 1))
                    - np.nanmean(traj.mm[rest][:, s], axis=(0, 1))
                    for s in sets
                ]
                # The direction of pull as the value's own sensor measured it
                # (the image tracker for skin), where the step recorded it.
                keys = [f"{g.name}:{side}", f"{g.name}:{side}:lower"][: len(sets)]
                measured = [r.displacement_mm.get(k) for k in keys]
                if all(m is not None and np.isfinite(m).all() for m in measured):
                    disp = [np.asarray(m) for m in measured]
                if g.kind == "aperture":
                    down_up = -disp[0][1], disp[1][1]  # upper lid down, lower lid up
                    total = down_up[0] + down_up[1]
                    share = (down_up[0] / total) if total > 0.1 else 0.6
                    share = float(np.clip(share, 0, 1))
                    drawn = [np.array([0.0, -share * val]), np.array([0.0, (1 - share) * val])]
                elif g.kind in ("up", "down"):
                    drawn = [np.array([0.0, val if g.kind == "up" else -val])]
                else:
                    n = float(np.hypot(*disp[0]))
                    drawn = [disp[0] * (abs(val) / n) if n > 1e-6 else np.zeros(2)]
                start_i = 0
                for s, d, v in zip(sets, disp, drawn, strict=True):
                    idx = slice(start_i, start_i + len(s))
                    start_i += len(s)
                    if not (np.isfinite(d).all() and np.isfinite(v).all()):
                        continue
                    pts_rest = peak_px[idx] - (d[0] * lat + d[1] * up) * px_per_mm
                    c = np.nanmean(pts_rest, axis=0)
                    end = c + ARROW_GAIN * (v[0] * lat + v[1] * up) * px_per_mm
                    out.append((side, pts_rest, c, end))
    return out


def _face_crop(
    cache: FrameCache, frame: int, box_px: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The grey crop of ``frame`` cut to ``box_px`` (x0, y0, x1, y1 in image px).

    Returns the image and its top-left corner in cache-crop coordinates; the
    whole cache crop when there is no box.
    """
    grey = cache.image(frame)
    if box_px is None or not np.isfinite(box_px).all():
        return grey, np.zeros(2)
    (x0, y0), (x1, y1) = cache.to_crop(box_px.reshape(2, 2), frame)
    x0, y0, x1, y1 = (int(round(v)) for v in (x0, y0, x1, y1))
    h, w = grey.shape
    pad = max(0, -x0, -y0, x1 - w, y1 - h)
    if pad:
        grey = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    out = grey[y0 + pad : y1 + pad, x0 + pad : x1 + pad]
    if out.size == 0:
        return cache.image(frame), np.zeros(2)
    return out, np.array([x0, y0], float)


def face_box(clip: ClipResult, frame: int) -> np.ndarray | None:
    """A portrait box around the face at ``frame`` (image px): forehead to chin, margin."""
    if not 0 <= frame < len(clip.track):
        return None
    pts = clip.track.xy[frame]
    if not np.isfinite(pts[[10, 152]]).all():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cx, cy = np.nanmean(pts[:468], axis=0)
    hgt = 1.3 * float(np.hypot(*(pts[10] - pts[152])))
    wid = 0.82 * hgt
    return np.array([cx - wid / 2, cy - hgt / 2, cx + wid / 2, cy + hgt / 2])


def _region_box(clip: ClipResult, r: StepResult, session: Session) -> np.ndarray | None:
    """A landscape box (image px, at the step's keyframe) around the step's points.

    Wide enough for some context (at least REGION_MIN_MM), so a few millimetres
    of pull, drawn ×ARROW_GAIN, read clearly.
    """
    kf = r.window.keyframe
    if not 0 <= kf < len(clip.track):
        return None
    step = session.options.protocol.step(r.window.name)
    idx = sorted({p for g in step.groups for p in g.all_points})
    pts = clip.track.xy[kf, idx]
    pts = pts[np.isfinite(pts).all(axis=1)]
    z = clip.traj.zoom[kf] if kf < len(clip.traj.zoom) else np.nan
    if not len(pts) or not np.isfinite(z):
        return None
    px_per_mm = z / clip.scale.mm_per_px
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    wid = max(1.35 * (x1 - x0), REGION_MIN_MM * px_per_mm)
    hgt = max(wid / REGION_ASPECT, 1.8 * (y1 - y0))
    wid = max(wid, hgt * REGION_ASPECT)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return np.array([cx - wid / 2, cy - hgt / 2, cx + wid / 2, cy + hgt / 2])


def _frame_img(
    cache: FrameCache,
    frame: int,
    points: dict[str, np.ndarray],
    arrows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] | None = None,
    box_px: np.ndarray | None = None,
    height: int = FRAME_HEIGHT,
) -> str:
    """A grey face crop with the measured points, or (peak) the rest points and arrows."""
    grey, corner = _face_crop(cache, frame, box_px)
    f = height / grey.shape[0]
    img = cv2.resize(grey, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)

    def xy(p: np.ndarray) -> tuple[int, int]:
        return int(round((float(p[0]) - corner[0]) * f)), int(round((float(p[1]) - corner[1]) * f))

    def dots(pts: np.ndarray, bgr: tuple[int, int, int]) -> None:
        for p in cache.to_crop(np.asarray(pts, float), frame):
            if not np.isfinite(p).all():
                continue
            if arrows is None:  # the rest frame: where the points are
                cv2.circle(img, xy(p), 4, (255, 255, 255), -1, cv2.LINE_AA)
                cv2.circle(img, xy(p), 3, bgr, -1, cv2.LINE_AA)
            else:  # the peak frame: where they were at rest, as light rings
                cv2.circle(img, xy(p), 3, bgr, 1, cv2.LINE_AA)

    if arrows is None:
        for key, pts in points.items():
            dots(pts, _bgr(SIDE_COLOUR.get(key.split(":")[-1], "#ffffff")))
    else:
        for side, pts, a, b in arrows:
            bgr = _bgr(SIDE_COLOUR[side])
            dots(pts, bgr)
            p, q = cache.to_crop(np.stack([a, b]), frame)
            length = float(np.hypot(*(q - p))) * f
            if length < 3 or not (np.isfinite(p).all() and np.isfinite(q).all()):
                continue
            tip = min(0.45, 10 / length)
            cv2.arrowedLine(img, xy(p), xy(q), (255, 255, 255), 6, cv2.LINE_AA, tipLength=tip)
            cv2.arrowedLine(img, xy(p), xy(q), bgr, 3, cv2.LINE_AA, tipLength=tip)
    return _jpeg(img, 82)


LINE_NAMES = {
    "crow_feet": "crow's feet",
    "bunny_lines": "bunny lines",
    "forehead": "forehead lines",
    "glabella": "glabellar lines",
    "chin": "chin (pebbling)",
}


def lines_name(region: str) -> str:
    """A crease region as the clinician calls it."""
    return LINE_NAMES.get(region, f"{region.replace('_', ' ')} lines")


@dataclass(frozen=True)
class Picture:
    """One image of the page: a JPEG data URI, its alt text and its caption."""

    src: str
    alt: str
    caption: str


@dataclass(frozen=True)
class LinesFigure:
    """One crease region of a step: its rest and peak heat maps and each side's value."""

    name: str
    pictures: list[Picture]
    values: str


def step_frames(
    cache: FrameCache, r: StepResult, clip: ClipResult, session: Session
) -> list[Picture]:
    """The step's rest frame with the measured points and its peak frame with the
    rest points and the displacement arrows; none without a peak or a keyframe."""
    if not r.peak_frames or r.window.keyframe < 0:
        return []
    name = r.window.name
    pk = r.peak_frames[len(r.peak_frames) // 2]
    kf = r.window.keyframe
    box = _region_box(clip, r, session)
    rest_src = _frame_img(cache, kf, r.keyframe_points_px, None, box)
    arrows = _rest_peak_arrows(r, clip, session, pk)
    peak_src = _frame_img(cache, pk, r.peak_points_px, arrows, box)
    t = clip.track.t
    return [
        Picture(rest_src, f"{name} rest frame", f"{name} · rest, frame {kf} ({t[kf]:.2f} s)"),
        Picture(peak_src, f"{name} peak frame",
                f"{name} · peak, frame {pk} ({t[pk]:.2f} s); "
                f"arrows: measured movement ×{ARROW_GAIN:g}"),
    ]  # fmt: skip


def lines_figures(r: StepResult, clip: ClipResult, cache: FrameCache) -> list[LinesFigure]:
    """Per crease region: rest and peak frames with each side's line response as a
    heat map (one colour scale for both sides and both frames), and the numbers."""
    by_region: dict[str, dict[str, LineReading]] = {}
    for lr in r.lines:
        by_region.setdefault(lr.region, {})[lr.side] = lr
    t = clip.track.t
    figs = []
    for region, sides in by_region.items():
        heats = [x.heat for lr in sides.values() for x in (lr.rest, lr.peak) if x.readable]
        pos = np.concatenate([h[h > 0].ravel() for h in heats]) if heats else np.zeros(0)
        vmax = float(np.percentile(pos, 99)) if len(pos) else 1.0
        any_lr = next(iter(sides.values()))
        frames = (("rest", any_lr.rest_frame, "rest"), ("peak", any_lr.peak_frame, "peak"))
        # One crop box (cache-crop px) for both frames, around every drawn region,
        # so the rest and peak pictures show the same skin at the same size.
        corners = []
        for lr in sides.values():
            for which in ("rest", "peak"):
                reading = getattr(lr, which)
                if reading.readable:
                    hh, ww = reading.heat.shape
                    c = np.array([[0, 0, 1], [ww, 0, 1], [0, hh, 1], [ww, hh, 1]], float)
                    corners.append(c @ np.asarray(reading.patch_to_image, float).T)
        box = None
        if corners:
            b = np.concatenate(corners)
            (x0, y0), (x1, y1) = b.min(axis=0), b.max(axis=0)
            pad = 0.25 * max(x1 - x0, y1 - y0)
            box = (x0 - pad, y0 - pad, x1 + pad, y1 + pad)
        pictures = []
        for label, frame, which in frames:
            img = cv2.cvtColor(cache.image(frame), cv2.COLOR_GRAY2BGR)
            for lr in sides.values():
                reading = getattr(lr, which)
                if reading.readable:
                    img = draw_heat(img, reading, vmax=vmax)
            if box is not None:
                h, w = img.shape[:2]
                x0, y0 = int(max(box[0], 0)), int(max(box[1], 0))
                x1, y1 = int(min(box[2], w)), int(min(box[3], h))
                if x1 > x0 + 4 and y1 > y0 + 4:
                    img = img[y0:y1, x0:x1]
            f = LINES_HEIGHT / img.shape[0]
            img = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
            pictures.append(Picture(_jpeg(img, 82), f"{region} lines at {label}",
                                    f"{label}, frame {frame} ({t[frame]:.2f} s)"))
        vals = []
        for side in ("right", "left"):
            lr = sides.get(side)
            if lr is None:
                continue
            c = lr.change
            vals.append(
                f"{side} {c.value:.1f}" if c.readable else f"{side}: not readable ({c.reason})"
            )
        figs.append(LinesFigure(lines_name(region), pictures, ", ".join(vals)))
    return figs


def thumbnails(
    cache: FrameCache, r: StepResult, box_px: np.ndarray | None
) -> tuple[list[int], list[float], list[str]]:
    """Plain grey thumbnails every ~THUMB_STEP_S s of the step's window."""
    frames, t = np.asarray(r.frames, int), np.asarray(r.t, float)
    if len(frames) == 0:
        return [], [], []
    span = float(t[-1] - t[0]) if len(t) > 1 else 0.0
    dt = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
    every = max(THUMB_STEP_S, span / THUMBS_PER_STEP)
    stride = max(1, int(round(every / dt))) if dt > 0 else 1
    idx = list(range(0, len(frames), stride))
    out_f, out_t, out_s = [], [], []
    for i in idx:
        fr = int(frames[i])
        if not 0 <= fr < len(cache):
            continue
        grey, _ = _face_crop(cache, fr, box_px)
        f = THUMB_HEIGHT / grey.shape[0]
        small = cv2.resize(grey, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        out_f.append(fr)
        out_t.append(round(float(t[i]), 3))
        out_s.append(_jpeg(small, 72))
    return out_f, out_t, out_s

