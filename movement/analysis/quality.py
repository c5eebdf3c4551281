"""Recording quality per step: can this step's numbers be trusted?

For each found step, over its rest and step frames: the share of frames with a
tracked face, the head's yaw and roll (and their change), the face size in
pixels per mm, exposure and sharpness of the face crops at rest and at the
peak, and whether proper rest frames preceded the step. The verdict is
``ok``, ``low`` (reported, with the reason) or ``unusable`` (not reported as a
finding), with a plain instruction for the clinician.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from movement.analysis.activation import StepResult
from movement.analysis.landmarks import FrameCache, LandmarkTrack
from movement.analysis.pose import hard_to_read
from movement.analysis.stabilise import Scale, Trajectories, yaw_degrees
from movement.analysis.steps import REST_AFTER

# Thresholds: (low, unusable).
TRACKED = (0.9, 0.6)
YAW_DEG = (15.0, 30.0)
"""Head yaw (either way) with the face-on correction (movement.analysis.pose). On the
3D pose benchmark (benchmarks/pose.py) the corrected R-L stayed within 0.3 mm of the
frontal reading up to 10 degrees; beyond 15 the far cheek's skin is seen within
~25 degrees of edge-on, FaceMesh's depth there is least sure, and at 30 it starts to
hide."""
YAW_DEG_IMAGE = (5.0, 20.0)
"""Head yaw as read in the image plane (no depth, or ``--no-pose-correction``): on the
same benchmark a 10-degree turn moved a symmetric eee's R-L by 0.76 mm and turned an
asymmetric eee from left-dominant to balanced, all graded ``ok`` under the former
20-degree threshold."""
PITCH_DEG = (15.0, 30.0)
"""Head pitch (chin up or down) with the face-on correction: on the 3D pose benchmark
the corrected R-L at 10 degrees of pitch moved by at most 0.46 mm, and two of ten
calls became uncertain, none the other side (docs/figures/pose.md); beyond 15 the
brows and the lip contours are seen steeply enough that FaceMesh places them less
surely, and at 30 the brows or the mouth start to hide. Only where a pose was read
(FaceMesh's depth)."""
YAW_CHANGE_DEG = (8.0, 15.0)
ROLL_DEG = (15.0, 25.0)
PX_PER_MM = (1.2, 0.6)
DARK, BRIGHT = 40.0, 225.0
BLUR_RATIO = 0.5


@dataclass(frozen=True)
class StepQuality:
    step: str
    verdict: str  # ok | low | unusable | missing
    reasons: tuple[str, ...]
    instruction: str
    face_tracked: float
    yaw_deg: tuple[float, float]
    roll_deg: tuple[float, float]
    px_per_mm: float
    brightness: float
    sharpness_ratio: float
    rest_before: bool

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def grade_value(value: float, th: tuple[float, float], below: bool) -> str:
    """``ok``, ``low`` or ``unusable`` for a value against (low, unusable) thresholds;
    ``below``: smaller values are worse. A value that could not be read is ``ok`` here
    (its absence is graded by the rule that needs it). The recording check before a
    consult (:mod:`movement.analysis.preview`) grades its frames with this too."""
    if not np.isfinite(value):
        return "ok"
    if value < th[1] if below else value > th[1]:
        return "unusable"
    if value < th[0] if below else value > th[0]:
        return "low"
    return "ok"


def exposure_fault(brightness: float) -> bool:
    """Whether a face crop's mean grey (its centre half) is too dark or over-exposed."""
    return bool(np.isfinite(brightness) and not DARK <= brightness <= BRIGHT)


def face_centre(img: np.ndarray) -> np.ndarray:
    """The centre half of a square face crop: the face, not the background."""
    n = img.shape[0]
    c = slice(n // 4, 3 * n // 4)
    return img[c, c]


def sharpness(img: np.ndarray) -> float:
    """Variance of the Laplacian: high for fine detail in focus, low when blurred."""
    return float(cv2.Laplacian(img, cv2.CV_32F).var())


def _range(a: np.ndarray) -> tuple[float, float]:
    a = a[np.isfinite(a)]
    return (float(a.min()), float(a.max())) if len(a) else (float("nan"), float("nan"))


def assess_step(
    r: StepResult,
    track: LandmarkTrack,
    traj: Trajectories,
    scale: Scale,
    cache: FrameCache | None,
) -> StepQuality:
    """Quality of one step's recording (see module docstring)."""
    w = r.window
    if not w.found:
        # A cue window that could not be measured says why (steps.cue_window_reason).
        reason = w.notes[0] if w.notes else "step not found in the video"
        return StepQuality(w.name, "missing", (reason,),
                           f"record '{w.name}' (it was not found)" if not w.notes
                           else f"re-record '{w.name}': {reason}", 0.0, (np.nan, np.nan),
                           (np.nan, np.nan), np.nan, np.nan, np.nan, False)
    if not w.rest:
        # Found, but with no frame of the face at rest to measure from (steps.NO_REST).
        reason = w.notes[0] if w.notes else "no frame of the face at rest"
        return StepQuality(w.name, "unusable", (reason,),
                           f"re-record '{w.name}': {reason}; rest for two seconds before "
                           "each step", 0.0, (np.nan, np.nan), (np.nan, np.nan), np.nan,
                           np.nan, np.nan, False)
    first, last = w.span
    span = np.arange(first, last + 1)
    tracked = float(track.valid[span].mean())
    yaw = yaw_degrees(traj.yaw_index[span])
    yaw_r = _range(yaw)
    yaw_th = YAW_DEG_IMAGE
    pitch_r = (float("nan"), float("nan"))
    turn = yaw_r[1] - yaw_r[0]
    if r.pose is not None:
        # The pose the correction used (FaceMesh's depth at rest, the anchors' turn).
        yaw_r = _range(r.pose.yaw_deg)
        yaw_th = YAW_DEG
        pitch_r = _range(r.pose.pitch_deg)
        # The turn during the step as the pose reads it (StepPose.turn_deg): the
        # image-plane yaw index reads a curved face's turn too large. (It still
        # speaks when the pose read no yaw at all.)
        if np.isfinite(r.pose.turn_deg):
            turn = r.pose.turn_deg
    roll_r = _range(traj.roll_deg[span])
    px_per_mm = 1.0 / scale.mm_per_px
    bright = sharp_ratio = float("nan")
    if cache is not None and r.peak_frames:
        key = cache.image(w.keyframe)
        peak = cache.image(r.peak_frames[len(r.peak_frames) // 2])
        bright = float(np.mean(face_centre(key)))
        s_rest = sharpness(face_centre(key))
        sharp_ratio = sharpness(face_centre(peak)) / s_rest if s_rest > 0 else float("nan")
    rest_before = not w.notes and bool(w.rest) and max(w.rest) < w.start
    low: list[str] = []
    bad: list[str] = []
    fix: list[str] = []

    def grade(value: float, th: tuple[float, float], text: str, hint: str, below: bool) -> None:
        g = grade_value(value, th, below)
        if g == "unusable":
            bad.append(text)
            fix.append(hint)
        elif g == "low":
            low.append(text)
            fix.append(hint)

    grade(tracked, TRACKED, f"face tracked in {tracked:.0%} of the step",
          "keep the whole face in view", below=True)
    big_yaw = max(abs(yaw_r[0]), abs(yaw_r[1])) if np.isfinite(yaw_r[0]) else np.nan
    side = "left" if abs(yaw_r[1]) >= abs(yaw_r[0]) else "right"
    grade(big_yaw, yaw_th, f"head turned {big_yaw:.0f}° to the patient's {side}",
          "face the camera", below=False)
    big_pitch = (max(pitch_r, key=abs) if np.isfinite(pitch_r[0]) else np.nan)
    grade(abs(big_pitch), PITCH_DEG,
          f"head tilted chin-{'up' if big_pitch > 0 else 'down'} {abs(big_pitch):.0f}°",
          "keep the chin level", below=False)
    grade(turn, YAW_CHANGE_DEG, f"head turned by {turn:.0f}° "
          "during the step", "keep the head still", below=False)
    big_roll = max(abs(roll_r[0]), abs(roll_r[1])) if np.isfinite(roll_r[0]) else np.nan
    grade(big_roll, ROLL_DEG, f"head tilted {big_roll:.0f}°", "hold the head level", below=False)
    grade(px_per_mm, PX_PER_MM, f"face small in the frame ({px_per_mm:.1f} px per mm)",
          "move the camera closer", below=True)
    if exposure_fault(bright):
        low.append(f"face {'dark' if bright < DARK else 'over-exposed'} "
                   f"(mean grey {bright:.0f})")
        fix.append("light the face evenly")
    if np.isfinite(sharp_ratio) and sharp_ratio < BLUR_RATIO:
        low.append(f"peak frames blurred ({sharp_ratio:.0%} of rest sharpness)")
        fix.append("hold the expression still and use more light")
    prim = next((m.muscle_group for m in r.measures if m.primary), None)
    for text in hard_to_read(r.pose, prim) if prim else []:
        low.append(text)
        fix.append("face the camera")
    if not rest_before:
        # Rest read after the step (nothing before it) is said as such: the face
        # after an expression is not always back at rest.
        low.append(REST_AFTER if REST_AFTER in w.notes else "no rest frames just before the step")
        fix.append("rest for two seconds before each step")
    verdict = "unusable" if bad else "low" if low else "ok"
    reasons = tuple(bad + low)
    instruction = f"re-record '{w.name}': {reasons[0]}; {fix[0]}" if reasons else ""
    return StepQuality(w.name, verdict, reasons, instruction, tracked, yaw_r, roll_r,
                       px_per_mm, bright, sharp_ratio, rest_before)


def assess(
    results: list[StepResult],
    track: LandmarkTrack,
    traj: Trajectories,
    scale: Scale,
    cache: FrameCache | None,
) -> list[StepQuality]:
    return [assess_step(r, track, traj, scale, cache) for r in results]
