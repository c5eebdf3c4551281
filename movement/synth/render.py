"""Rendering a :class:`SynthSpec` to frames, its truth record, and the video file.

Each frame is one backward map (head motion and placement, then the active step's
field inside its support box) and one ``cv2.remap`` of the base face, then the
step's dynamic lines and the degradations (blur, light drift, noise, JPEG,
mirroring). :func:`truth_record` writes down, from the same fields, what every
protocol group truly moved; :func:`make_video` writes both.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from movement.protocol import MuscleGroup
from movement.synth.creases import STEP_CREASES, apply_creases
from movement.synth.face import ASTRONAUT, BASE_SIZE, base_face, use_face
from movement.synth.fields import (
    FIELD_DESIGNS,
    SIDES,
    CalibratedStep,
    DisplacementField,
    calibrate_step,
    group_truth,
    protocol,
)
from movement.synth.schedule import (
    HOLD_S,
    StepMotion,
    SynthSpec,
    envelope,
    extended_sample_spec,
    sample_spec,
)

# --------------------------------------------------------------------------- rendering

# Periods (s) of the slow head-motion sinusoids; incommensurate so the pose never repeats.
_ROLL_PERIOD_S, _SHIFT_X_PERIOD_S, _SHIFT_Y_PERIOD_S, _ZOOM_PERIOD_S = 6.1, 7.7, 5.3, 9.1
_SHIFT_Y_RATIO = 0.7


@dataclass(frozen=True)
class HeadMotion:
    """Slow similarity motion of the head: roll, drift and zoom as sinusoids."""

    roll_deg: float
    shift_px: float
    zoom: float
    phases: tuple[float, float, float, float]

    def at(self, t: float) -> tuple[float, float, float, float]:
        """(roll radians, shift x px, shift y px, relative zoom) at time ``t``."""
        two_pi = 2 * math.pi
        p = self.phases
        roll = math.radians(self.roll_deg) * math.sin(two_pi * t / _ROLL_PERIOD_S + p[0])
        sx = self.shift_px * math.sin(two_pi * t / _SHIFT_X_PERIOD_S + p[1])
        sy = _SHIFT_Y_RATIO * self.shift_px * math.sin(two_pi * t / _SHIFT_Y_PERIOD_S + p[2])
        z = self.zoom * math.sin(two_pi * t / _ZOOM_PERIOD_S + p[3])
        return roll, sx, sy, z

    def describe(self) -> dict[str, object]:
        return {
            "model": "similarity about the face centre, sinusoids",
            "roll_deg": {"amplitude": self.roll_deg, "period_s": _ROLL_PERIOD_S,
                         "phase_rad": self.phases[0]},
            "shift_x_px": {"amplitude": self.shift_px, "period_s": _SHIFT_X_PERIOD_S,
                           "phase_rad": self.phases[1]},
            "shift_y_px": {"amplitude": _SHIFT_Y_RATIO * self.shift_px,
                           "period_s": _SHIFT_Y_PERIOD_S, "phase_rad": self.phases[2]},
            "zoom": {"amplitude": self.zoom, "period_s": _ZOOM_PERIOD_S,
                     "phase_rad": self.phases[3]},
        }


class Renderer:
    """Renders the frames of one :class:`SynthSpec` (each frame independently).

    Per frame the backward map is built once: frame pixel -> (inverse head motion and
    placement) -> base pixel ``y`` -> ``y - a f(y)`` inside the active step's support
    box -> canvas pixel, followed by a single ``cv2.remap``. The field is evaluated
    analytically on that box, so the pixels use exactly the field the truth is
    computed from.
    """

    def __init__(self, spec: SynthSpec, size: int = BASE_SIZE) -> None:
        self.spec = spec
        use_face(spec.face)
        self.face = base_face(size)
        self.size = size
        self.steps = {
            (s.name, s.right_mm, s.left_mm): calibrate_step(s.name, s.right_mm, s.left_mm, size)
            for s in spec.steps
        }
        rng = np.random.default_rng(spec.seed)
        self.head = HeadMotion(
            spec.roll_deg, spec.shift_px, spec.zoom, tuple(rng.uniform(0, 2 * np.pi, 4).tolist())
        )
        w, h = spec.frame_size
        # Placement: face height -> face_height_frac of the frame, face centre -> centre.
        self.scale = spec.face_height_frac * h / self.face.height_px
        self.frame_centre = np.array([(w - 1) / 2, (h - 1) / 2])
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        self.grid = np.dstack([gx, gy])

    @property
    def frame_mm_per_px(self) -> float:
        """mm per frame pixel with the head at its mean pose (no zoom)."""
        return self.face.mm_per_px / self.scale

    def frame_to_base(self, t: float) -> np.ndarray:
        """2x3 affine taking frame pixels to base pixels at time ``t`` (head motion)."""
        roll, sx, sy, z = self.head.at(t)
        m = 1.0 / (self.scale * (1.0 + z))
        c, s = math.cos(roll), math.sin(roll)
        lin = m * np.array([[c, s], [-s, c]])  # inverse of a rotation by +roll, scaled
        shift = self.frame_centre + np.array([sx, sy])
        return np.hstack([lin, (self.face.centre - lin @ shift)[:, None]])

    def base_to_frame(self, t: float, pts: np.ndarray) -> np.ndarray:
        """Where base points appear in the frame at ``t`` (head motion only, unmirrored)."""
        a = self.frame_to_base(t)
        inv = np.linalg.inv(a[:, :2])
        return (np.asarray(pts, dtype=float) - a[:, 2]) @ inv.T

    def activation(self, t: float) -> tuple[CalibratedStep | None, float]:
        for s in self.spec.steps:
            a = float(envelope(s, t))
            if a > 0:
                return self.steps[(s.name, s.right_mm, s.left_mm)], a
        return None, 0.0

    def source_map(self, t: float) -> np.ndarray:
        """(H, W, 2) float32 canvas position shown by each (unmirrored) frame pixel at ``t``."""
        to_canvas = self.frame_to_base(t)
        to_canvas[:, 2] += self.face.offset
        ymap = cv2.transform(self.grid, to_canvas)
        step, a = self.activation(t)
        box = step.field.bbox() if step is not None else None
        if box is not None:
            self._apply_field(ymap, t, step.field.scaled(a), box)
        return ymap

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` (BGR uint8), degradations and mirroring included."""
        t = i / self.spec.fps
        ymap = self.source_map(t)
        img = cv2.remap(
            self.face.canvas, ymap, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT,
        )
        return self._degrade(self._fold(img, ymap, t), i, t)

    def _fold(self, img: np.ndarray, ymap: np.ndarray, t: float) -> np.ndarray:
        """The active step's dynamic lines, drawn where the skin now is."""
        for s in self.spec.steps:
            if not (s.crease_right or s.crease_left):
                continue
            a = float(envelope(s, t))
            if a > 0:
                depths = {n: (s.crease_right, s.crease_left) for n in STEP_CREASES.get(s.name, ())}
                offset = np.asarray(self.face.offset, dtype=np.float32)
                return apply_creases(img, ymap - offset, depths, a, self.size,
                                     s.crease_variant)
        return img

    def _apply_field(
        self, ymap: np.ndarray, t: float, fld: DisplacementField, box: tuple[float, ...]
    ) -> None:
        # Only the frame pixels whose base position lies in the field's support box
        # need the field; outside it the field is < 4e-5 of its peak.
        corners = np.array([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]], [box[2], box[3]]])
        fc = self.base_to_frame(t, corners)
        h, w = ymap.shape[:2]
        c0, r0 = np.floor(fc.min(0)).astype(int) - 2
        c1, r1 = np.ceil(fc.max(0)).astype(int) + 3
        c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, w), min(r1, h)
        if c0 >= c1 or r0 >= r1:
            return
        sub = ymap[r0:r1, c0:c1]
        offset = np.asarray(self.face.offset, dtype=np.float32)
        disp = fld(sub - offset)
        sub -= disp.astype(np.float32)

    def _degrade(self, img: np.ndarray, i: int, t: float) -> np.ndarray:
        spec = self.spec
        if spec.blur_sigma > 0:
            img = cv2.GaussianBlur(img, (0, 0), spec.blur_sigma)
        gain = 1.0 + spec.light_drift * (t / spec.duration_s - 0.5)
        if spec.noise_sigma > 0:
            # OpenCV's RNG is per thread; seeding it per frame keeps frames reproducible
            # whichever worker thread renders them (and 3x faster than NumPy's normal).
            cv2.setRNGSeed(int(spec.seed) * 1_000_003 + i)
            noise = np.empty(img.shape, np.float32)
            cv2.randn(noise, 0.0, float(spec.noise_sigma))
            img = cv2.addWeighted(img, gain, noise, 1.0, 0.0, dtype=cv2.CV_8U)
        elif gain != 1.0:
            img = cv2.convertScaleAbs(img, alpha=gain)
        if spec.jpeg_quality is not None:
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(spec.jpeg_quality)])
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if spec.mirrored:
            img = cv2.flip(img, 1)
        return img

    def frames(self, workers: int | None = None) -> Iterator[np.ndarray]:
        """All frames in order, rendered by a small thread pool (OpenCV drops the GIL)."""
        n = self.spec.n_frames
        workers = workers or min(4, os.cpu_count() or 1)
        chunk = 4 * workers
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, n, chunk):
                yield from pool.map(self.frame, range(start, min(start + chunk, n)))


# --------------------------------------------------------------------------- truth + video


def _group_record(
    grp: MuscleGroup, fld: DisplacementField, size: int, primary: bool
) -> dict[str, object]:
    tr = group_truth(grp, fld, 1.0, size)
    return {
        "muscle_group": grp.name,
        "measure": grp.measure,
        "kind": grp.kind,
        "primary": primary,
        "right_mm": round(tr["right"], 6),
        "left_mm": round(tr["left"], 6),
    }


def _range_truth(
    s: StepMotion, grp: MuscleGroup, fld: DisplacementField, fps: float, size: int
) -> dict[str, object]:
    """Truth of a repeated movement, defined as the analyzer reads it: per side the
    95th percentile of the true value over the step's frames, and its movements.

    The true value at each frame's activation comes from a 41-point table of
    exact solves (linear interpolation between them errs < 0.001 mm).
    """
    from movement.analysis.activation import RANGE_PERCENTILE, count_movements

    grid = np.linspace(0.0, 1.0, 41)
    table = {side: [] for side in SIDES}
    for a in grid:
        tr = group_truth(grp, fld, float(a), size) if a > 0 else {x: 0.0 for x in SIDES}
        for side in SIDES:
            table[side].append(tr[side])
    n0, n1 = int(math.ceil(s.start_s * fps)), int(math.floor(s.end_s * fps))
    t = np.arange(n0, n1 + 1) / fps
    act = envelope(s, t)
    out: dict[str, object] = {}
    moves = {}
    for side in SIDES:
        v = np.interp(act, grid, table[side])
        rng = float(np.percentile(v, RANGE_PERCENTILE))
        out[f"{side}_mm"] = round(rng, 6)
        moves[side] = count_movements(v, rng)
    out["movements"] = moves
    out["definition"] = f"{RANGE_PERCENTILE}th percentile over the step; movements counted"
    return out


def truth_record(spec: SynthSpec, renderer: Renderer | None = None) -> dict[str, object]:
    """The ground truth of ``spec`` as a JSON-ready dict (see :func:`make_video`)."""
    r = renderer or Renderer(spec)
    face = r.face
    proto = protocol(spec.protocol)
    primaries = {s.name: s.primary for s in proto.steps}
    steps = []
    for s in spec.steps:
        cal = r.steps[(s.name, s.right_mm, s.left_mm)]
        pstep = proto.step(s.name)
        # Primary first, then any secondary groups the protocol lists for this step.
        ordered = sorted(pstep.groups, key=lambda g: not g.primary)
        groups = [_group_record(g, cal.field, r.size, g.primary) for g in ordered]
        if s.syllable_hz > 0:
            for rec, g in zip(groups, ordered, strict=True):
                rec.update(_range_truth(s, g, cal.field, spec.fps, r.size))
        # What the *other* steps' primary measurements read during this step: they
        # should be ~0 (the fields are local); an analyzer reporting more is leaking.
        crosstalk = [
            {"step": name, **_group_record(g, cal.field, r.size, False)}
            for name, g in primaries.items()
            if name != s.name
        ]
        steps.append(
            {
                "creases": [
                    {"region": n, "right_depth": s.crease_right, "left_depth": s.crease_left}
                    for n in STEP_CREASES.get(s.name, ())
                ],
                "name": s.name,
                "start_s": s.start_s,
                "peak_s": s.peak_s,
                "end_s": s.end_s,
                "plateau_s": [s.peak_s - HOLD_S, s.peak_s + HOLD_S],
                "requested": {"right_mm": s.right_mm, "left_mm": s.left_mm},
                "groups": groups,
                "crosstalk": crosstalk,
                "field": {
                    "design": asdict(FIELD_DESIGNS[s.name]),
                    "gains_mm": {k: round(v, 5) for k, v in cal.gains.items()},
                    "min_jacobian_det": round(cal.min_det, 4),
                },
            }
        )
    lm = face.landmarks
    ap = next(m for m in proto.rest_measures if m.kind == "aperture")
    aperture = {
        side: float(
            (np.mean(lm[list(getattr(ap, side))] @ face.up)
             - np.mean(lm[list(getattr(ap, f"{side}_lower"))] @ face.up)) * face.mm_per_px
        )
        for side in SIDES
    }
    w, h = spec.frame_size
    return {
        "format": "movement-synth-truth",
        "version": 1,
        "protocol": proto.name,
        "sides": "anatomical (patient's right/left), unchanged by mirroring",
        "fps": spec.fps,
        "n_frames": spec.n_frames,
        "duration_s": spec.duration_s,
        "frame_size": [w, h],
        "mirrored": spec.mirrored,
        "mm_per_px_base": face.mm_per_px,
        "frame_mm_per_px": r.frame_mm_per_px,
        "placement_scale": r.scale,
        "face_height_frac": spec.face_height_frac,
        "seed": spec.seed,
        "degradations": {
            "roll_deg": spec.roll_deg,
            "shift_px": spec.shift_px,
            "zoom": spec.zoom,
            "noise_sigma": spec.noise_sigma,
            "jpeg_quality": spec.jpeg_quality,
            "blur_sigma": spec.blur_sigma,
            "light_drift": spec.light_drift,
        },
        "head_motion": r.head.describe(),
        "envelope": f"raised cosine start->peak-{HOLD_S}s, hold, raised cosine ->end",
        "base": {
            "photo": "skimage.data.astronaut" if spec.face == ASTRONAUT else spec.face,
            "size_px": [int(face.image.shape[1]), int(face.image.shape[0])],
            "face_height_px": face.height_px,
            "rest_aperture_mm": {k: round(v, 4) for k, v in aperture.items()},
        },
        "steps": steps,
    }


def make_video(spec: SynthSpec, out: Path, truth_path: Path | None = None) -> dict:
    """Render ``spec`` to ``out`` (.mp4, 'mp4v') and write its truth JSON.

    Parameters
    ----------
    spec : SynthSpec
    out : Path
        Video path; must end in ``.mp4``. Parent directories are created.
    truth_path : Path, optional
        Where to write the truth; default ``<out without .mp4>.truth.json``.

    Returns
    -------
    dict
        The truth (as written), plus ``video``, ``truth_path`` and ``render_s``.
        Per step: ``name, start_s, peak_s, end_s`` and ``groups`` with
        ``muscle_group, measure, kind, primary, right_mm, left_mm`` -- the protocol
        groups of that step, primary first, values at the peak (activation 1).
    """
    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"video path must end in .mp4: {out}")
    truth_path = Path(truth_path) if truth_path else out.with_suffix(".truth.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    renderer = Renderer(spec)
    truth = truth_record(spec, renderer)
    return write_consult(renderer.frames(), out, spec, truth, truth_path, indent=2)


def write_consult(frames: Iterator[np.ndarray], out: Path, spec: SynthSpec, truth: dict,
                  truth_path: Path, indent: int) -> dict:
    """Write ``frames`` to ``out`` (mp4v at the spec's rate and size) and ``truth`` (with
    the video's name) as JSON to ``truth_path``; returns the truth as the file holds it
    (JSON types: lists, not tuples) plus ``video``, ``truth_path`` and ``render_s``.

    Each is written beside under a temporary name and renamed when complete: a render
    stopped half-way (a benchmark interrupted) leaves no truncated video next to an
    older truth file, which a benchmark reusing its videos would read.
    """
    import time

    part = out.with_name(f".{out.stem}.partial.mp4")
    writer = cv2.VideoWriter(
        str(part), cv2.VideoWriter_fourcc(*"mp4v"), float(spec.fps), tuple(spec.frame_size)
    )
    if not writer.isOpened():
        raise RuntimeError(f"cannot open a video writer for {out} (codec mp4v, {spec.frame_size})")
    t0 = time.perf_counter()
    try:
        for img in frames:
            writer.write(img)
    except BaseException:
        writer.release()
        part.unlink(missing_ok=True)
        raise
    writer.release()
    truth["video"] = out.name
    text = json.dumps(truth, indent=indent) + "\n"
    truth_path.parent.mkdir(parents=True, exist_ok=True)
    truth_part = truth_path.with_name(f".{truth_path.name}.partial")
    truth_part.write_text(text, encoding="utf-8")
    os.replace(part, out)
    os.replace(truth_part, truth_path)
    return {**json.loads(text), "video": str(out), "truth_path": str(truth_path),
            "render_s": time.perf_counter() - t0}


def make_sample(out_dir: Path) -> Path:
    """Write ``sample_consult.mp4`` and ``sample_extended.mp4`` (each with its
    ``.truth.json``) into ``out_dir``; returns the first."""
    out = Path(out_dir) / "sample_consult.mp4"
    make_video(sample_spec(), out)
    make_video(extended_sample_spec(), Path(out_dir) / "sample_extended.mp4")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m movement.synth [OUT_DIR]``: regenerate the sample (default ./videos)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1 or (args and args[0].startswith("-")):
        # One optional folder; anything else (``--help`` included) is not a folder to
        # fill with videos.
        print("usage: python -m movement.synth [OUT_DIR]  (regenerates the sample videos;"
              " default ./videos)", file=sys.stderr)
        raise SystemExit(0 if args[:1] in (["-h"], ["--help"]) else 2)
    out_dir = Path(args[0]) if args else Path("videos")
    path = make_sample(out_dir)
    print(f"{path} ({path.stat().st_size / 1e6:.2f} MB)")
