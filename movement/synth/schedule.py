"""What a synthetic video performs: the steps, their timing and their requested truth.

A :class:`SynthSpec` is everything that defines a video (with its seed, its pixels);
:func:`standard_spec` lays a protocol's steps out in order with rests between them,
:func:`envelope` is a step's activation over time, and :func:`sample_spec` /
:func:`extended_sample_spec` are the bundled samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from movement.protocol import Protocol
from movement.synth.creases import MAX_DEPTH
from movement.synth.face import ASTRONAUT
from movement.synth.fields import FIELD_DESIGNS, protocol

HOLD_S = 0.15
"""Half-width of the plateau of the activation envelope around ``peak_s``."""

SPEECH_RAMP_S = 0.5
SPEECH_SYLLABLE_HZ = 2.0
"""Syllable rate of the generated speech sample (slow counting)."""


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class StepMotion:
    """One protocol step in a synthetic video: timing and requested truth per side (mm).

    The activation rises (raised cosine) from ``start_s`` to ``peak_s - HOLD_S``, holds
    1 until ``peak_s + HOLD_S`` and falls back to 0 at ``end_s``.
    """

    name: str
    start_s: float
    peak_s: float
    end_s: float
    right_mm: float
    left_mm: float
    syllable_hz: float = 0.0  # > 0: repeated movement (speech), see :func:`envelope`
    crease_right: float = 0.0  # fold depth of the step's dynamic lines at activation 1
    crease_left: float = 0.0  # (0.2 = 20 % darker; movement.synth.creases)
    crease_variant: int = 0  # 0: the standard fold designs; else a varied_design seed

    def __post_init__(self) -> None:
        if not self.start_s < self.peak_s - HOLD_S < self.peak_s + HOLD_S < self.end_s:
            raise ValueError(
                f"step {self.name}: need start_s < peak_s - {HOLD_S} and "
                f"peak_s + {HOLD_S} < end_s (got {self.start_s}, {self.peak_s}, {self.end_s})"
            )
        if self.right_mm < 0 or self.left_mm < 0:
            raise ValueError(f"step {self.name}: amplitudes must be >= 0 mm")
        if not (0 <= self.crease_right <= MAX_DEPTH and 0 <= self.crease_left <= MAX_DEPTH):
            raise ValueError(f"step {self.name}: crease depths must be 0-{MAX_DEPTH:g}")


@dataclass(frozen=True)
class SynthSpec:
    """Everything that defines a synthetic video (and, with ``seed``, its pixels)."""

    steps: tuple[StepMotion, ...]
    duration_s: float
    fps: float = 30.0
    frame_size: tuple[int, int] = (1280, 720)  # (width, height); portrait = (720, 1280)
    face_height_frac: float = 0.55  # face height / frame height (0.35 = small face)
    roll_deg: float = 0.0  # amplitude of a slow head roll
    shift_px: float = 0.0  # amplitude of a slow head drift (frame px)
    zoom: float = 0.0  # amplitude of relative scale change, e.g. 0.05
    noise_sigma: float = 0.0  # gaussian pixel noise (grey levels)
    jpeg_quality: int | None = None  # pass each frame through JPEG at this quality
    blur_sigma: float = 0.0
    light_drift: float = 0.0  # relative brightness change across the video (e.g. 0.2)
    mirrored: bool = False  # selfie video: flip every frame horizontally
    seed: int = 0
    protocol: str = "standard"  # the protocol the video performs (order, truth record)
    face: str = ASTRONAUT  # the photo warped (see use_face)

    def __post_init__(self) -> None:
        # Accept lists from callers but keep the spec immutable (and hashable).
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "frame_size", (int(self.frame_size[0]), int(self.frame_size[1])))
        if self.fps <= 0 or self.duration_s <= 0:
            raise ValueError("fps and duration_s must be positive")
        w, h = self.frame_size
        if w < 16 or h < 16:
            raise ValueError(f"frame_size too small: {self.frame_size}")
        if not 0.05 <= self.face_height_frac <= 1.5:
            raise ValueError(f"face_height_frac out of range: {self.face_height_frac}")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be 1..100")
        if min(self.noise_sigma, self.blur_sigma, self.shift_px, self.zoom) < 0:
            raise ValueError("noise_sigma, blur_sigma, shift_px and zoom must be >= 0")
        if self.zoom >= 0.5:
            raise ValueError("zoom is a relative amplitude and must be < 0.5")
        ordered = sorted(self.steps, key=lambda s: s.start_s)
        for a, b in zip(ordered, ordered[1:], strict=False):
            if b.start_s < a.end_s:
                raise ValueError(f"steps overlap: {a.name} ends after {b.name} starts")
        for s in self.steps:
            if s.start_s < 0 or s.end_s > self.duration_s:
                raise ValueError(f"step {s.name} lies outside 0..{self.duration_s} s")
            if s.name not in FIELD_DESIGNS:
                raise ValueError(f"no displacement design for step {s.name!r}")

    @property
    def n_frames(self) -> int:
        return int(round(self.duration_s * self.fps))


def envelope(step: StepMotion, t: float | np.ndarray) -> np.ndarray:
    """Activation of ``step`` at times ``t`` (s): 0 at rest, 1 on the plateau.

    A raised cosine has zero slope at both ends, so landmarks start and stop moving
    smoothly, like a real muscle, and peak detection has a flat top to find.
    """
    t = np.asarray(t, dtype=float)
    if step.syllable_hz > 0:
        # Speech: each syllable a raised-cosine movement, at full height except
        # for the first and last half-second.
        ramp = np.clip(np.minimum(t - step.start_s, step.end_s - t) / SPEECH_RAMP_S, 0.0, 1.0)
        osc = 0.5 - 0.5 * np.cos(2 * np.pi * step.syllable_hz * (t - step.start_s))
        return np.where((t > step.start_s) & (t < step.end_s), ramp * osc, 0.0)
    rise_end, fall_start = step.peak_s - HOLD_S, step.peak_s + HOLD_S
    up = 0.5 - 0.5 * np.cos(np.pi * (t - step.start_s) / (rise_end - step.start_s))
    down = 0.5 + 0.5 * np.cos(np.pi * (t - fall_start) / (step.end_s - fall_start))
    return np.select(
        [t <= step.start_s, t < rise_end, t <= fall_start, t < step.end_s],
        [0.0, up, 1.0, down],
        0.0,
    )


def standard_steps(
    amplitudes: Mapping[str, tuple[float, float]],
    start_s: float = 1.5,
    step_s: float = 3.0,
    rest_s: float = 2.0,
    skip: Iterable[str] = (),
    protocol_name: str = "standard",
    creases: Mapping[str, tuple[float, float]] | None = None,
) -> tuple[StepMotion, ...]:
    """Lay out the protocol's steps in order with rests between them.

    Parameters
    ----------
    amplitudes : {step: (right_mm, left_mm)}
        Requested truth per step; every step not skipped needs an entry.
    start_s, step_s, rest_s : float
        Rest before the first step, length of each step, rest between steps.
    skip : names of steps the patient skips
        Their time slot stays in the video as rest (the patient was asked and did
        nothing), so the timing of the other steps does not depend on what is skipped.
    protocol_name : the protocol whose steps are laid out ("standard", "extended")
        A repeated-movement step (speech) lasts its protocol duration, with syllables.
    creases : {step: (right, left)} fold depth of the step's dynamic lines (0-MAX_DEPTH)
    """
    creases = creases or {}
    skip = set(skip)
    proto = protocol(protocol_name)
    names = [s.name for s in proto.steps]
    unknown = (set(amplitudes) | skip) - set(names)
    if unknown:
        raise ValueError(f"unknown steps {sorted(unknown)}; protocol order is {names}")
    out = []
    t = start_s
    for name in names:
        length, hz = _slot(proto, name, step_s)
        if name not in skip:
            if name not in amplitudes:
                raise ValueError(f"no amplitudes for step {name!r} (skip it explicitly)")
            r, lft = amplitudes[name]
            cr, cl = creases.get(name, (0.0, 0.0))
            out.append(
                StepMotion(name, t, t + length / 2, t + length, float(r), float(lft), hz,
                           float(cr), float(cl))
            )
        t += length + rest_s
    return tuple(out)


def _slot(proto: Protocol, name: str, step_s: float) -> tuple[float, float]:
    """Length (s) and syllable rate of a step's slot in a generated video."""
    st = proto.step(name)
    if st.mode == "range":
        return st.duration_s, SPEECH_SYLLABLE_HZ
    return step_s, 0.0


def standard_spec(
    amplitudes: Mapping[str, tuple[float, float]],
    *,
    skip: Iterable[str] = (),
    start_s: float = 1.5,
    step_s: float = 3.0,
    rest_s: float = 2.0,
    tail_s: float = 2.0,
    creases: Mapping[str, tuple[float, float]] | None = None,
    **kwargs: object,
) -> SynthSpec:
    """A :class:`SynthSpec` for a protocol, ending ``tail_s`` after the last step.

    ``kwargs`` are the other :class:`SynthSpec` fields (``fps``, ``roll_deg``,
    ``protocol`` ...).
    """
    name = str(kwargs.get("protocol", "standard"))
    proto = protocol(name)
    steps = standard_steps(amplitudes, start_s, step_s, rest_s, skip, name, creases)
    # The video always covers the full protocol slot layout, skipped steps included.
    slots = [_slot(proto, s.name, step_s)[0] for s in proto.steps]
    end = start_s + sum(slots) + (len(slots) - 1) * rest_s
    return SynthSpec(steps=steps, duration_s=end + tail_s, **kwargs)  # type: ignore[arg-type]


SAMPLE_AMPLITUDES: dict[str, tuple[float, float]] = {
    "frown": (3.0, 1.6),
    "raise": (4.2, 2.3),
    "squint": (2.6, 1.3),  # aperture mm; the base eyes are ~6.5 mm open
    "eee": (2.0, 3.4),
    "smile": (6.0, 4.0),
}
"""A clearly asymmetric pattern (right, left) in mm, with the left side dominant in eee."""


_SAMPLE_RECORDING: dict[str, object] = dict(
    fps=30.0, frame_size=(960, 540), roll_deg=2.0, shift_px=8.0, zoom=0.02, noise_sigma=1.5,
)
"""How both bundled samples are filmed: 960x540 at 30 fps, mild head motion and noise."""


def sample_spec() -> SynthSpec:
    """The bundled sample: 960x540 at 30 fps, SAMPLE_AMPLITUDES with their lines
    (SAMPLE_CREASES), mild head motion."""
    return standard_spec(
        SAMPLE_AMPLITUDES,
        creases={k: v for k, v in SAMPLE_CREASES.items() if k in SAMPLE_AMPLITUDES},
        **_SAMPLE_RECORDING,
        seed=7,
    )


EXTENDED_SAMPLE_AMPLITUDES: dict[str, tuple[float, float]] = {
    **SAMPLE_AMPLITUDES,
    "pout": (2.4, 1.2),
    "scrunch": (1.0, 2.2),
    "gummy_smile": (3.2, 1.6),
    "sad_mouth": (1.4, 2.8),
    "clench": (1.6, 0.6),
    "speech": (3.0, 1.8),
}
"""The extended sample: the standard pattern, then the lower face (mm, right/left)."""

SAMPLE_CREASES: dict[str, tuple[float, float]] = {
    "frown": (0.25, 0.10),
    "raise": (0.30, 0.15),
    "squint": (0.12, 0.30),
    "smile": (0.20, 0.20),
    "scrunch": (0.10, 0.28),
    "pout": (0.22, 0.08),
}
"""Fold depths (fraction darker at the fold) of the extended sample's dynamic lines."""


def extended_sample_spec() -> SynthSpec:
    """The extended-protocol sample: the sample's settings, every step, with lines."""
    return standard_spec(
        EXTENDED_SAMPLE_AMPLITUDES,
        creases=SAMPLE_CREASES,
        protocol="extended",
        **_SAMPLE_RECORDING,
        seed=11,
    )

