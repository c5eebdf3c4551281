"""The recording check on one camera frame, with the analysis's own rules.

Before a consult is recorded (`movement record`), the page sends a camera frame
about twice a second; this module says whether the frame would make a good
recording and, if not, what to do about it in plain words. Every measured
quantity comes from the analysis's own code, so the check and the verdict given
after the analysis cannot disagree: the face mesh configured as the analysis's
fresh detections, the face counter of the landmark pass, the iris scale
(:func:`movement.analysis.stabilise.estimate_scale`), head turn and tilt
(:func:`movement.analysis.stabilise.stabilise`, ``yaw_degrees``), the face crop
(:func:`movement.analysis.landmarks.face_crop`) and the thresholds and grading of
:mod:`movement.analysis.quality`. A check passes when the analysis would grade
the value ``ok``.

Three rules have no counterpart after the fact, because a finished video cannot be
re-framed: centring (the face drifting out of a badly centred frame is what the
analysis's "face tracked" rule catches later), light from one side, and the
sharpness of the face itself (the analysis compares peak with rest sharpness).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from movement.analysis.landmarks import LandmarkTrack, face_crop, mesh_points
from movement.analysis.quality import (
    BRIGHT,
    DARK,
    PX_PER_MM,
    ROLL_DEG,
    YAW_DEG,
    exposure_fault,
    face_centre,
    grade_value,
    sharpness,
)
from movement.analysis.stabilise import estimate_scale, stabilise, yaw_degrees
from movement.analysis.video import rgb_for_mesh

CENTRE_TOL = 0.15
"""How far (fraction of the frame's width or height) the face's centre may sit from
the frame's centre: a head moving a little during the protocol stays in view."""
EDGE_MARGIN = 0.02
"""Landmarks closer than this (fraction of the frame) to an edge: the face is cut off."""
EVEN_RATIO = 0.6
"""Darker over brighter half of the face (patient's right and left): below this the
light comes from one side, and one side's skin texture (the image tracker's grip) and
creases read differently from the other's."""
SHARP_MIN = 5.0
"""Variance of the Laplacian (:func:`movement.analysis.quality.sharpness`) of the face
crop's centre (the analysis's crop, 320 px face height) below which the face is out of
focus or blurred by motion. The generated face (an upsampled photo, softer than a
camera's) reads 16 at 640x360 and 3 when blurred by a 2.5 px Gaussian; a threshold
that fails only a clearly blurred face, since skin texture varies between people."""


@dataclass(frozen=True)
class Check:
    """One rule on one frame."""

    name: str  # face | faces | in_view | size | centre | turn | tilt | light | even | sharp
    label: str  # what is checked, for the page
    ok: bool
    value: str  # the measured value, readable ("1.8 px per mm")
    instruction: str  # what to do when not ok ("" when ok)


@dataclass(frozen=True)
class FrameVerdict:
    """Every check of one frame; ``instruction`` is the first failing check's."""

    ok: bool
    instruction: str
    checks: tuple[Check, ...]
    px_per_mm: float = float("nan")
    yaw_deg: float = float("nan")
    roll_deg: float = float("nan")
    brightness: float = float("nan")
    box: tuple[float, float, float, float] | None = None  # face x0, y0, x1, y1 (0-1)

    def record(self) -> dict:
        """JSON-ready (NaN as None)."""
        def plain(v: object) -> object:
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            if isinstance(v, list | tuple):
                return [plain(x) for x in v]
            if isinstance(v, np.bool_ | bool):
                return bool(v)
            if isinstance(v, np.floating | float):
                return float(v) if np.isfinite(v) else None
            return v

        return plain(asdict(self))  # type: ignore[return-value]


READY = "Good. Hold still."


class FrameChecker:
    """Checks camera frames one at a time (not thread-safe: one caller at a time)."""

    def __init__(self) -> None:
        import mediapipe as mp

        # The analysis's fresh detections (landmarks.track_landmarks): still-image
        # mode, two faces, refined iris.
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=2, refine_landmarks=True,
            min_detection_confidence=0.5,
        )
        # The landmark pass's face counter: the mesh misses a smaller second face.
        self._counter = mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=0.6
        )

    def close(self) -> None:
        self._mesh.close()
        self._counter.close()

    def __enter__(self) -> FrameChecker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self, image: np.ndarray) -> FrameVerdict:
        """The verdict on one unmirrored BGR camera frame (the patient's right on the
        image left, as the camera records it)."""
        h, w = image.shape[:2]
        rgb = rgb_for_mesh(image)
        faces = self._mesh.process(rgb).multi_face_landmarks or []
        counted = len(self._counter.process(rgb).detections or [])
        if not faces:
            c = Check("face", "Face", False, "no face found",
                      "Face the camera, with the whole face in the frame")
            return FrameVerdict(False, c.instruction, (c,))
        wh = np.array([w, h], dtype=np.float64)
        cands = [mesh_points(f)[:, :2] * wh for f in faces]
        pts = max(cands, key=lambda c: float(np.linalg.norm(c[10] - c[152])))
        return _verdict(image, pts, max(len(faces), counted))


def _verdict(image: np.ndarray, pts: np.ndarray, n_faces: int) -> FrameVerdict:
    h, w = image.shape[:2]
    checks: list[Check] = [Check("face", "Face", True, "found", "")]
    checks.append(Check("faces", "One face", n_faces <= 1, f"{n_faces} in view",
                        "" if n_faces <= 1 else "Only the patient in view, please"))
    lo, hi = pts[:468].min(axis=0), pts[:468].max(axis=0)
    box = (lo[0] / w, lo[1] / h, hi[0] / w, hi[1] / h)
    inside = min(box[0], box[1], 1 - box[2], 1 - box[3]) >= EDGE_MARGIN
    checks.append(Check("in_view", "Whole face", inside, "in view" if inside else "cut off",
                        "" if inside else "Keep the whole face in the frame: move back a little"))

    # The analysis's scale and head pose, on a one-frame track of this detection.
    one = pts[None].astype(np.float32)
    track = LandmarkTrack(np.zeros(1), one.copy(), np.array([n_faces]))
    scale = estimate_scale(track)
    traj = stabilise(track, scale, smooth=1)
    px_per_mm = 1.0 / scale.mm_per_px
    yaw = float(yaw_degrees(traj.yaw_index)[0])
    roll = float(traj.roll_deg[0])

    size_ok = grade_value(px_per_mm, PX_PER_MM, below=True) == "ok"
    checks.append(Check("size", "Face size", size_ok, f"{px_per_mm:.1f} px per mm",
                        "" if size_ok else "Move closer to the camera"))

    cx, cy = (lo + hi) / 2 / np.array([w, h])
    dx, dy = cx - 0.5, cy - 0.5
    centre_ok = abs(dx) <= CENTRE_TOL and abs(dy) <= CENTRE_TOL
    if centre_ok:
        where = ""
    elif abs(dx) >= abs(dy):
        # The patient's right is on the image left (an unmirrored camera frame).
        where = f"Move a little to your {'left' if dx < 0 else 'right'}"
    else:
        where = "Raise the camera a little" if dy < 0 else "Lower the camera a little"
    checks.append(Check("centre", "Centred", centre_ok,
                        f"{abs(dx) * 100:.0f} % across, {abs(dy) * 100:.0f} % up/down", where))

    turn_ok = grade_value(abs(yaw), YAW_DEG, below=False) == "ok"
    # Positive yaw: the nose toward the patient's left (stabilise.yaw_index).
    checks.append(Check("turn", "Facing the camera", turn_ok,
                        f"turned {abs(yaw):.0f}° to the {'left' if yaw > 0 else 'right'}",
                        "" if turn_ok else
                        f"Turn your head a little to your {'right' if yaw > 0 else 'left'}"))
    tilt_ok = grade_value(abs(roll), ROLL_DEG, below=False) == "ok"
    # Positive roll: the patient's left eye higher, the head leaning to the right shoulder.
    checks.append(Check("tilt", "Head level", tilt_ok, f"tilted {abs(roll):.0f}°",
                        "" if tilt_ok else
                        f"Hold your head level: lean it toward your "
                        f"{'left' if roll > 0 else 'right'} shoulder"))

    crop = face_centre(face_crop(image, pts))
    bright = float(np.mean(crop))
    light_ok = not exposure_fault(bright)
    checks.append(Check("light", "Light", light_ok, f"mean grey {bright:.0f}",
                        "" if light_ok else
                        "More light on the face, from the front" if bright < DARK else
                        "Less light: the face is over-exposed"))
    # Halves of the face crop: image left is the patient's right.
    half = crop.shape[1] // 2
    r_side, l_side = float(np.mean(crop[:, :half])), float(np.mean(crop[:, half:]))
    even = min(r_side, l_side) / max(r_side, l_side, 1e-6)
    even_ok = even >= EVEN_RATIO
    dim = "right" if r_side < l_side else "left"
    checks.append(Check("even", "Even light", even_ok, f"darker side {even:.0%} of the other",
                        "" if even_ok else
                        f"Light from the front: your {dim} side is in shadow"))
    sharp = sharpness(crop)
    sharp_ok = sharp >= SHARP_MIN
    checks.append(Check("sharp", "Sharp", sharp_ok, f"detail {sharp:.0f}",
                        "" if sharp_ok else "Hold still; clean the lens or add light"))

    failing = [c for c in checks if not c.ok]
    instruction = failing[0].instruction if failing else READY
    return FrameVerdict(not failing, instruction, tuple(checks), px_per_mm, yaw, roll, bright,
                        box)


__all__ = ["BRIGHT", "DARK", "Check", "FrameChecker", "FrameVerdict", "READY"]
