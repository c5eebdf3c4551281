"""movement: measure how a face moves, per muscle group and per side, in millimetres.

The package reads top to bottom as the work flows:

- :mod:`movement.protocol`: protocols and the landmark-to-muscle mapping, as data;
- :mod:`movement.analysis`: the pipeline, video to tables (one module per stage);
- :mod:`movement.report`: the session folder and its HTML report;
- :mod:`movement.clinic`: the patient store and the comparison of visits;
- :mod:`movement.consult`: one video (or one clip per step) analysed into a session folder;
- :mod:`movement.batch`: batches of consults on a process pool or Dask workers, resumable;
- :mod:`movement.cli`: the ``movement`` command, a thin layer over the above;
- :mod:`movement.synth`: the ground-truth generator (tests and benchmarks only).

The entry points a program needs are importable from here; they load lazily, so
``import movement`` stays instant (the analysis loads OpenCV and MediaPipe).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# One BLAS thread (unless the user chose otherwise), set before NumPy and SciPy load
# their OpenBLAS, which reads it once. The analysis runs its own threads beside the
# face mesh; OpenBLAS's workers only contend with them, and on a busy two-core
# machine each tiny LAPACK call (SciPy's interpolation makes one per triangle of the
# face mesh, pose.smooth_normals) waited on descheduled workers: one call took 2-7 s
# of CPU instead of 10 ms. The outputs do not change (asymmetry.csv and metrics.csv
# byte-identical on the bundled sample consults).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"

MEASUREMENT_VERSION = 5
"""How the numbers are made, apart from the package version: raised by every change
that moves the millimetres a session reports (docs/METHOD.md §12 lists what each
version measures). Written into ``session.json`` and the clinic store; sessions of
different versions are never compared as if alike (``movement reanalyze`` brings an
older one to this version from its video)."""

MEASUREMENT_UNKNOWN = 0
"""The version of a session whose ``session.json`` names none: older than 1."""

_PUBLIC = {
    "analyze_to_folder": "movement.consult",
    "write_consult": "movement.consult",
    "run_batch": "movement.batch",
    "BatchItem": "movement.batch",
    "read_manifest": "movement.batch",
    "analyze": "movement.analysis.pipeline",
    "Options": "movement.analysis.pipeline",
    "Session": "movement.analysis.pipeline",
    "ClipResult": "movement.analysis.pipeline",
    "StepResult": "movement.analysis.activation",
    "load_protocol": "movement.protocol",
    "Protocol": "movement.protocol",
}

__all__ = ["MEASUREMENT_UNKNOWN", "MEASUREMENT_VERSION", "__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'movement' has no attribute {name!r}")
