"""The ground-truth generator: consult videos of known movement, per side, in millimetres.

It is the truth source of every accuracy figure (``benchmarks/accuracy.py``) and
of the bundled samples. It is not part of the analysis: nothing under
:mod:`movement.analysis` imports it.

A real face photo (``skimage.data.astronaut``, or another one: :func:`use_face`) is
warped frame by frame with smooth displacement fields so that the landmark regions each
protocol step measures move a known number of millimetres per side. Head
roll/shift/zoom, blur, lighting drift, noise and JPEG loss are added on top, the frames
are written as an ``.mp4`` and the truth as JSON next to it.

Conventions (MEASUREMENTS.md sections 1, 2 and 5)
-------------------------------------------------
* Displacement fields live in *base-photo pixels* (the upscaled crop returned by
  :func:`load_face_photo`); amplitudes are requested in mm and converted with the base
  mm/px from the iris (:data:`movement.analysis.face.IRIS_DIAMETER_MM`).
* A frame is a *backward* warp, ``out(x) = in(x - f(x))`` (what ``cv2.remap`` does), so a
  base point ``p`` shows up at ``q = p + f(q)``, not at ``p + f(p)``. The truth is
  computed from the solved ``q`` (:func:`solve_forward`), in the base face frame, with
  the protocol's measurement kind, and every field is calibrated so that this *true*
  value equals the requested one.
* ``right``/``left`` are the patient's anatomical sides; the patient's right is on the
  image left of the base photo. Mirroring a video flips pixels only, never the truth.

The modules, each importing only the ones above it:

- :mod:`movement.synth.face`: the base photo, its landmarks and iris ruler, and
  :func:`use_face` (which drops every cache built on the previous face);
- :mod:`movement.synth.fields`: displacement fields per muscle group and side, the
  measurement of the truth, the per-step designs and their calibration;
- :mod:`movement.synth.creases`: dynamic lines (folds of known depth) and confounders
  (hair, beard, glasses, light), drawn on top;
- :mod:`movement.synth.schedule`: the steps' timing and requested truth
  (:class:`SynthSpec`, :func:`standard_spec`, the samples);
- :mod:`movement.synth.render`: frames, the truth record and the video file.

Run ``python -m movement.synth [OUT_DIR]`` to (re)make the bundled sample videos.
"""

from movement.synth.face import (
    ASTRONAUT,
    BaseFace,
    base_face,
    load_face_photo,
    ruler_iris_px,
    use_face,
)
from movement.synth.fields import (
    Bump,
    DisplacementField,
    calibrate_step,
    check_no_fold,
    measure_group,
    protocol,
    solve_forward,
    warped_landmarks,
)
from movement.synth.render import Renderer, make_video, truth_record
from movement.synth.schedule import (
    EXTENDED_SAMPLE_AMPLITUDES,
    HOLD_S,
    SAMPLE_AMPLITUDES,
    SAMPLE_CREASES,
    StepMotion,
    SynthSpec,
    envelope,
    extended_sample_spec,
    sample_spec,
    standard_spec,
    standard_steps,
)

__all__ = [
    "ASTRONAUT", "EXTENDED_SAMPLE_AMPLITUDES", "HOLD_S", "SAMPLE_AMPLITUDES", "SAMPLE_CREASES",
    "BaseFace", "Bump", "DisplacementField", "Renderer", "StepMotion", "SynthSpec", "base_face",
    "calibrate_step", "check_no_fold", "envelope", "extended_sample_spec", "load_face_photo",
    "make_video", "measure_group", "protocol", "ruler_iris_px", "sample_spec", "solve_forward",
    "standard_spec", "standard_steps", "truth_record", "use_face", "warped_landmarks",
]  # fmt: skip
