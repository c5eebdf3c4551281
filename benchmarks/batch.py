"""Videos per hour of a batch on a local Dask cluster against the process pool.

Run by hand (one run measures both, since machines are noisy; needs the
cluster extra, ``pip install 'movement-face[cluster]'``):

    .venv/bin/python benchmarks/batch.py              # 6 short consults, 2 workers
    .venv/bin/python benchmarks/batch.py --videos 4 --seconds 6 --workers 2

It generates N short consults (one smile, 640x360) into a folder, then runs the
real command line twice on it, each in a fresh process into a fresh output
folder: ``movement analyze FOLDER --batch --jobs W`` and ``... --cluster local:W``.
The wall time of each includes everything the user waits for (starting the
pool or the cluster, hashing, recording, the summary). It prints videos/hour
for both and their ratio (cluster / pool; 1.0 = no cost). The order of the two
runs alternates with --order so a warm disk cache does not favour one.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from movement import __version__, synth


def make(folder: Path, n: int, seconds: float) -> list[Path]:
    out = []
    for i in range(n):
        steps = (synth.StepMotion("smile", 1.0, seconds / 2, seconds - 1.0, 3.0 + 0.3 * i, 2.0),)
        spec = synth.SynthSpec(steps=steps, duration_s=seconds, frame_size=(640, 360),
                               noise_sigma=1.0, seed=i)
        path = folder / f"consult{i:02d}.mp4"
        synth.make_video(spec, path)
        (folder / f"consult{i:02d}.truth.json").unlink(missing_ok=True)
        out.append(path)
    return out


def run(folder: Path, out: Path, how: list[str]) -> float:
    cmd = [sys.executable, "-m", "movement.cli", "analyze", str(folder), "--batch",
           "--out", str(out), "--no-images", "-q", *how]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(how)} failed ({res.returncode}): {res.stderr[-800:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=6.0, help="length of each consult")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--order", choices=["pool-first", "cluster-first"], default="pool-first")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="movement-batch-bench-") as tmp:
        d = Path(tmp)
        (d / "videos").mkdir()
        make(d / "videos", a.videos, a.seconds)
        runs = {"pool": ["--jobs", str(a.workers)],
                "cluster": ["--cluster", f"local:{a.workers}"]}
        order = ["pool", "cluster"] if a.order == "pool-first" else ["cluster", "pool"]
        took = {name: run(d / "videos", d / f"out-{name}", runs[name]) for name in order}
    print(f"movement {__version__}: {a.videos} consults of {a.seconds:g} s (640x360), "
          f"{a.workers} workers, order {a.order}")
    for name in ("pool", "cluster"):
        flag = " ".join(runs[name])
        print(f"  {flag:<20} {took[name]:7.1f} s   {a.videos / took[name] * 3600:7.0f} videos/hour")
    print(f"  ratio cluster / pool (videos/hour): {took['pool'] / took['cluster']:.2f}")


if __name__ == "__main__":
    main()
