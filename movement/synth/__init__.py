"""The ground-truth generator: consult videos of known movement, per side, in millimetres.

It is the truth source of every accuracy figure (``benchmarks/accuracy.py``) and
of the bundled samples. It is not part of the analysis: nothing under
:mod:`movement.analysis` imports it.

- :mod:`movement.synth.generator`: the face photo, displacement fields per muscle
  group and side, the protocol's schedule, rendering and the truth record;
- :mod:`movement.synth.creases`: dynamic lines (folds of known depth) drawn on top.
"""

from movement.synth.generator import (
    ASTRONAUT,
    EXTENDED_SAMPLE_AMPLITUDES,
    HOLD_S,
    SAMPLE_AMPLITUDES,
    BaseFace,
    Bump,
    DisplacementField,
    Renderer,
    StepMotion,
    SynthSpec,
    base_face,
    calibrate_step,
    check_no_fold,
    envelope,
    extended_sample_spec,
    load_face_photo,
    make_video,
    measure_group,
    protocol,
    sample_spec,
    solve_forward,
    standard_spec,
    standard_steps,
    use_face,
    warped_landmarks,
)

__all__ = [
    "ASTRONAUT", "EXTENDED_SAMPLE_AMPLITUDES", "HOLD_S", "SAMPLE_AMPLITUDES", "BaseFace", "Bump",
    "DisplacementField", "Renderer", "StepMotion", "SynthSpec", "base_face", "calibrate_step",
    "check_no_fold", "envelope", "extended_sample_spec", "load_face_photo", "make_video",
    "measure_group", "protocol", "sample_spec", "solve_forward", "standard_spec",
    "standard_steps", "use_face", "warped_landmarks",
]
