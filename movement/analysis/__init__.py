"""The analysis pipeline, one module per stage, in the order a video goes through them.

1. :mod:`~movement.analysis.video`: decode frames with their timestamps;
2. :mod:`~movement.analysis.landmarks`: FaceMesh landmarks per frame (478 points);
3. :mod:`~movement.analysis.face`: the iris ruler and face axes from landmarks;
4. :mod:`~movement.analysis.stabilise`: head motion removed, pixels to millimetres;
5. :mod:`~movement.analysis.steps`: where each protocol step is (cues or found);
6. :mod:`~movement.analysis.imagetrack`: skin followed in the image (Lucas-Kanade);
7. :mod:`~movement.analysis.activation`: per muscle group and side, the movement
   at its peak (with :mod:`~movement.analysis.creases` for dynamic lines);
8. :mod:`~movement.analysis.quality`: how far each step's recording can be trusted;
9. :mod:`~movement.analysis.asymmetry`: the tables, with the side rules of
   :mod:`~movement.analysis.dominance`.

:func:`movement.analysis.pipeline.analyze` runs them in that order; no stage
imports a later one. Nothing here writes files: see :mod:`movement.report`.
"""
