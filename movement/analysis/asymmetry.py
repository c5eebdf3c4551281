"""Stage 7 — asymmetry: which side pulls harder, by how much, and at rest.

Tables produced (pandas DataFrames; the columns are the output contract):

``asymmetry``: one row per (step, muscle_group, measure)
    step, muscle_group, measure, primary, right_mm, left_mm, diff_mm,
    asymmetry_index, dominant_side, quality, reason, peak_s, right_lo, right_hi,
    left_lo, left_hi, diff_lo, diff_hi (95 % intervals), call_reason
``metrics``: one row per (step, muscle_group, side)
    step, muscle_group, measure, kind, sensor, side, peak_s, rest_mm, peak_mm,
    activation_mm, check_mm, rest_frames, peak_frames, keyframe, flags, yaw_deg,
    pitch_deg, rest_yaw_deg, rest_pitch_deg, pose_factor (movement.analysis.pose),
    then INTERVAL_COLUMNS
``midline``: one row per (step, point set)
    step, points, drift_mm, toward
``rest``: one row per resting measure
    measure, right_mm, left_mm, diff_mm, larger_side
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from movement.analysis.activation import GroupMeasure, StepResult
from movement.analysis.dominance import rule_words, side_call
from movement.analysis.pose import POSE_COLUMNS, pose_fields
from movement.analysis.restface import (
    FACE_OVAL,
    OUTLINE_REST_YAW_DEG,
    REST_PITCH_LOW_DEG,
    REST_YAW_LOW_DEG,
)
from movement.analysis.stabilise import Trajectories
from movement.analysis.uncertainty import difference_interval, doubt_words
from movement.protocol import MuscleGroup, Protocol, Thresholds

ASYMMETRY_COLUMNS = [
    "step",
    "muscle_group",
    "measure",
    "primary",
    "right_mm",
    "left_mm",
    "diff_mm",
    "asymmetry_index",
    "dominant_side",
    "quality",
    "reason",
    "peak_s",
]
"""asymmetry.csv's columns the clinic store keeps; :data:`CALL_COLUMNS` follow them in
the file."""
CALL_COLUMNS = ["right_lo", "right_hi", "left_lo", "left_hi", "diff_lo", "diff_hi",
                "call_reason"]
"""asymmetry.csv's 95 % intervals of each side and of right - left
(:mod:`movement.analysis.uncertainty`), and why the side call is what it is."""
METRICS_COLUMNS = [
    "step",
    "muscle_group",
    "measure",
    "kind",
    "sensor",
    "side",
    "peak_s",
    "rest_mm",
    "peak_mm",
    "activation_mm",
    "check_mm",
    "rest_frames",
    "peak_frames",
    "keyframe",
    "flags",
]
"""metrics.csv's columns the clinic store keeps; the pose columns
(:data:`movement.analysis.pose.POSE_COLUMNS`) and the interval's parts
(:data:`INTERVAL_COLUMNS`) follow them in the file."""
INTERVAL_COLUMNS = [
    "hold_sd",
    "rest_sd",
    "points_sd",
    "points_used",
    "scale_sd",
    "fit_sd",
    "pose_sd",
    "method_sd",
    "reads",
    "value_lo",
    "value_hi",
]
"""metrics.csv's parts of each value's 95 % interval (:mod:`movement.analysis.uncertainty`):
standard errors in the value's unit, the points followed at the hold, the share of the
truth the method reads (the protocol's ``reads``) and the interval."""


def asymmetry_index(right: float, left: float) -> float:
    """(right - left) / (right + left): -1..1, positive = right stronger.

    Undefined (NaN) when the sides do not both pull (sum <= 0), e.g. an eye that
    opens instead of narrowing.
    """
    s = right + left
    if not np.isfinite(s) or s <= 1e-9:
        return float("nan")
    return float(np.clip((right - left) / s, -1, 1))


_RANK = {"ok": 0, "low": 1, "unusable": 2}


def _difference_terms(g: MuscleGroup | None) -> tuple[float, float, float]:
    """(reads_spread, reads_shared, interval_scale) of a group, (0, 0, 1) for none: what
    of the method's part both sides share, and the interval's calibrated width
    (uncertainty.difference_interval)."""
    return (g.reads_spread, g.reads_shared, g.interval_scale) if g is not None else (
        0.0, 0.0, 1.0)


def tables(
    results: list[StepResult],
    protocol: Protocol,
    recording: dict[str, tuple[str, str]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """asymmetry, metrics and midline tables from the step results.

    ``recording`` maps a step to the recording-quality verdict and reason
    (:mod:`movement.analysis.quality`); a row's quality is the worse of the recording's
    and the measurement's own.
    """
    recording = recording or {}
    asym, metr, mid = [], [], []
    th = protocol.thresholds
    for r in results:
        w = r.window
        if not w.found or not r.measures:
            quality, reason = (
                ("missing", "step not found in the video")
                if not w.found
                else ("unusable", "the points could not be followed through the step")
            )
            # The recording's own reason where it has one: a cue window too short
            # to measure, no face at rest to measure from.
            rec = recording.get(w.name)
            if rec is not None and rec[0] in ("missing", "unusable") and rec[1]:
                reason = rec[1]
            st = protocol.step(w.name)
            rows_for = [(g.name, g.measure, g.primary) for g in st.groups]
            if st.mode == "range":
                rows_for += [(g.name, "movements", False) for g in st.groups]
            rows_for += [(c.name, "crease", False) for c in st.creases]
            for name, measure, primary in rows_for:
                asym.append(
                    dict(
                        step=w.name,
                        muscle_group=name,
                        measure=measure,
                        primary=primary,
                        right_mm=np.nan,
                        left_mm=np.nan,
                        diff_mm=np.nan,
                        asymmetry_index=np.nan,
                        dominant_side="undetermined",
                        quality=quality,
                        reason=reason,
                        peak_s=np.nan,
                        call_reason="",
                    )
                )
            continue
        by_group: dict[tuple[str, str], dict[str, object]] = {}
        groups = {g.name: g for g in protocol.step(w.name).groups}
        reads = {name: g.reads for name, g in groups.items()}
        for m in r.measures:
            metr.append(
                dict(
                    step=m.step,
                    muscle_group=m.muscle_group,
                    measure=m.measure,
                    kind=m.kind,
                    sensor=m.sensor,
                    side=m.side,
                    peak_s=r.time_of(m.peak_frames or r.peak_frames),
                    rest_mm=m.rest_mm,
                    peak_mm=m.peak_mm,
                    activation_mm=m.activation_mm,
                    check_mm=m.check_mm,
                    rest_frames=" ".join(map(str, w.rest)),
                    peak_frames=" ".join(map(str, m.peak_frames or r.peak_frames)),
                    keyframe=w.keyframe,
                    flags="; ".join(m.flags),
                    **pose_fields(r.pose, m),
                    **_interval_fields(m, reads.get(m.muscle_group, 1.0)),
                )
            )
            key = (m.muscle_group, m.measure)
            by_group.setdefault(key, {"measure": m.measure, "primary": m.primary})
            by_group[key][m.side] = m
        for (name, _), d in by_group.items():
            rm, lm = d["right"], d["left"]
            right, left = rm.activation_mm, lm.activation_mm  # type: ignore[attr-defined]
            flags = rm.flags + lm.flags  # type: ignore[attr-defined]
            unusable = ("implausible", "points lost", "region unreadable", "count unreliable")
            implausible = [f for f in flags if f.startswith(unusable)]
            quality, reason = "ok", ""
            if implausible or r.head_inliers < 4:
                # Both sides are often unusable for the same reason: say it once.
                why = dict.fromkeys(implausible or ["head motion fit failed"])
                quality, reason = "unusable", "; ".join(why)
            elif flags:
                quality, reason = "low", "; ".join(dict.fromkeys(flags))
            rec_q, rec_reason = recording.get(w.name, ("ok", ""))
            if _RANK.get(rec_q, 0) > _RANK[quality]:
                quality = rec_q
            if rec_reason and rec_q != "ok":
                reason = "; ".join(x for x in (rec_reason, reason) if x)
            measure = str(d["measure"])
            r_iv, l_iv = (rm.lo, rm.hi), (lm.lo, lm.hi)  # type: ignore[attr-defined]
            diff_iv = (
                difference_interval(right, left, rm.spread, lm.spread,  # type: ignore[attr-defined]
                                    reads.get(name, 1.0), *_difference_terms(groups.get(name)))
                if measure not in ("crease", "movements") else (np.nan, np.nan)
            )
            dom = (
                side_call(measure, right, left, th, r_iv, l_iv, diff_iv)
                if quality != "unusable"
                else "undetermined"
            )
            why = _call_reason(dom, measure, name, right - left, r_iv, l_iv, diff_iv,
                               rm, lm, reads.get(name, 1.0), th)  # type: ignore[arg-type]
            asym.append(
                dict(
                    step=w.name,
                    muscle_group=name,
                    measure=d["measure"],
                    primary=d["primary"],
                    right_mm=right,
                    left_mm=left,
                    diff_mm=right - left,
                    asymmetry_index=asymmetry_index(right, left),
                    dominant_side=dom,
                    quality=quality,
                    reason=reason,
                    peak_s=r.time_of(rm.peak_frames or r.peak_frames),  # type: ignore[attr-defined]
                    right_lo=r_iv[0], right_hi=r_iv[1], left_lo=l_iv[0], left_hi=l_iv[1],
                    diff_lo=diff_iv[0], diff_hi=diff_iv[1], call_reason=why,
                )
            )
        for name, v in r.drift_mm.items():
            mid.append(
                dict(step=w.name, points=name, drift_mm=abs(v), toward="left" if v > 0 else "right")
            )
    return (
        pd.DataFrame(asym, columns=ASYMMETRY_COLUMNS + CALL_COLUMNS),
        pd.DataFrame(metr, columns=METRICS_COLUMNS + POSE_COLUMNS + INTERVAL_COLUMNS),
        pd.DataFrame(mid, columns=["step", "points", "drift_mm", "toward"]),
    )


def _interval_fields(m: GroupMeasure, reads: float) -> dict[str, float]:
    """The INTERVAL_COLUMNS of a metrics row (NaN where the value has no interval)."""
    out: dict[str, float] = dict.fromkeys(INTERVAL_COLUMNS, np.nan)
    sp = m.spread
    if sp is None:
        return out
    out.update(hold_sd=sp.hold, rest_sd=sp.rest, points_sd=sp.points, scale_sd=sp.scale,
               fit_sd=sp.fit, pose_sd=sp.pose, method_sd=sp.method, value_lo=m.lo,
               value_hi=m.hi,
               points_used=float(sp.points_used) if sp.points_total else np.nan,
               reads=reads if m.measure != "crease" else np.nan)
    return out


def _call_reason(
    call: str,
    measure: str,
    group: str,
    diff: float,
    r_iv: tuple[float, float],
    l_iv: tuple[float, float],
    diff_iv: tuple[float, float],
    rm: GroupMeasure,
    lm: GroupMeasure,
    reads: float,
    th: Thresholds,
) -> str:
    """Why the call is what it is, in words: the interval against the rule, and for an
    uncertain call what widens the interval most."""
    if call not in ("right", "left", "balanced", "uncertain"):
        return ""
    rule = rule_words(measure, th)
    if measure == "crease":
        if not np.isfinite([*r_iv, *l_iv]).all():
            return ""
        where = (f"crease index right {r_iv[0]:.1f} to {r_iv[1]:.1f}, "
                 f"left {l_iv[0]:.1f} to {l_iv[1]:.1f}")
    elif measure == "movements" or not np.isfinite(diff_iv).all():
        return ""
    else:
        where = f"right - left {diff_iv[0]:+.1f} to {diff_iv[1]:+.1f} mm"
    verdict = {"right": "all of it meets", "left": "all of it meets",
               "balanced": "none of it meets", "uncertain": "only part of it meets"}[call]
    out = f"{where}: {verdict} the rule ({rule})"
    if call == "uncertain":
        doubt = doubt_words(group, rm.spread, lm.spread, diff, reads)
        if doubt:
            out += f"; the interval is widest from {doubt}"
    return out


def resting_asymmetry(traj: Trajectories, protocol: Protocol, frames: np.ndarray,
                      face: np.ndarray | None = None) -> pd.DataFrame:
    """Static right-vs-left measures on the neutral face (mean over ``frames``).

    Heights are along the face's up axis above the line through the iris
    centres, so they compare the two sides of one face, not two faces. ``face``
    (478, 2) is the neutral face already averaged, e.g. face-on
    (:func:`movement.analysis.pose.face_on_rest`); by default the image reading.
    """
    rows = []
    if face is None:
        face = np.nanmean(traj.mm[frames], axis=0) if len(frames) else np.full((478, 2), np.nan)
    for m in protocol.rest_measures:
        vals = {}
        for side in ("right", "left"):
            up = face[list(m.right if side == "right" else m.left), 1].mean()
            pts = list(m.right if side == "right" else m.left)
            if m.kind == "aperture":
                low = face[list(m.right_lower if side == "right" else m.left_lower), 1].mean()
                vals[side] = float(up - low)
            elif m.kind == "width":
                # Distance from the facial midline (x = 0, midway between the irises).
                vals[side] = float(np.abs(face[pts, 0].mean()))
            else:
                vals[side] = float(up)
        diff = vals["right"] - vals["left"]
        rows.append(
            dict(
                measure=m.name,
                right_mm=vals["right"],
                left_mm=vals["left"],
                diff_mm=diff,
                larger_side="right" if diff > 0 else "left",
            )
        )
    return pd.DataFrame(rows, columns=["measure", "right_mm", "left_mm", "diff_mm", "larger_side"])


REST_MEASURE_UNITS = {"height": "height_mm", "aperture": "aperture_mm", "width": "width_mm"}


def rest_rows(rest: pd.DataFrame, protocol: Protocol,
              rest_yaw_deg: float = float("nan"),
              rest_pitch_deg: float = float("nan")) -> pd.DataFrame:
    """The resting measures as ``asymmetry`` rows with step ``rest``.

    ``dominant_side`` is the side that sits higher (heights), more open
    (apertures) or further from the midline (widths) by at least
    ``rest_min_diff_mm``; a resting difference is position, not pull. A width read
    on the face's outline alone (the jaw contour) is ``low`` when the head at rest is
    turned by more than :data:`movement.analysis.restface.OUTLINE_REST_YAW_DEG`
    (``rest_yaw_deg``): the outline is then another line of skin; every row is ``low``
    beyond :data:`movement.analysis.restface.REST_YAW_LOW_DEG`, and beyond
    :data:`movement.analysis.restface.REST_PITCH_LOW_DEG` of pitch (``rest_pitch_deg``).
    """
    kinds = {m.name: m.kind for m in protocol.rest_measures}
    outline = {m.name for m in protocol.rest_measures
               if m.kind == "width" and FACE_OVAL.issuperset(m.right + m.left)}
    th = protocol.thresholds
    rows = []
    for _, r in rest.iterrows():
        right, left = float(r["right_mm"]), float(r["left_mm"])
        diff = right - left
        if not np.isfinite(diff):
            dom, quality, reason = "undetermined", "unusable", "no neutral face to measure"
        else:
            dom = ("right" if diff > 0 else "left") if abs(diff) >= th.rest_min_diff_mm else (
                "balanced"
            )
            quality, reason = "ok", ""
            far = "left" if rest_yaw_deg > 0 else "right"
            turned = f"head turned {abs(rest_yaw_deg):.0f}° at rest"
            if r["measure"] in outline and abs(rest_yaw_deg) > OUTLINE_REST_YAW_DEG:
                quality = "low"
                reason = (f"{turned}: the {far} jaw contour is the face's outline, not one "
                          "line of skin (face the camera)")
            elif abs(rest_yaw_deg) > REST_YAW_LOW_DEG:
                quality = "low"
                reason = (f"{turned}: the {far} side's landmarks are placed less surely "
                          "(face the camera)")
            elif abs(rest_pitch_deg) > REST_PITCH_LOW_DEG:
                quality = "low"
                reason = (f"head tilted chin-{'up' if rest_pitch_deg > 0 else 'down'} "
                          f"{abs(rest_pitch_deg):.0f}° at rest: brows and mouth corners are "
                          "placed less surely (keep the chin level)")
        rows.append(
            dict(
                step="rest", muscle_group=r["measure"],
                measure=REST_MEASURE_UNITS.get(kinds.get(r["measure"], "height"), "height_mm"),
                primary=False, right_mm=right, left_mm=left, diff_mm=diff,
                asymmetry_index=np.nan, dominant_side=dom, quality=quality, reason=reason,
                peak_s=np.nan, call_reason="",
            )
        )  # fmt: skip
    return pd.DataFrame(rows, columns=ASYMMETRY_COLUMNS + CALL_COLUMNS)
