"""Throughput of `movement analyze` against the tracker's own limit.

Run by hand (figures are ratios measured in one run, since machines are noisy):

    .venv/bin/python benchmarks/speed.py            # 1080p30 and 720p30 consults
    .venv/bin/python benchmarks/speed.py --memory   # + memory: 1-minute vs 5-minute video
    .venv/bin/python benchmarks/speed.py --write-docs   # + the table to docs/figures/speed.md

For each generated video it times, in one run (each the fastest of ``--repeat`` runs,
interleaved):
  (a) decoding only,
  (b) decoding + one MediaPipe face mesh call per frame (tracking mode, one face,
      refined iris): the tracker's own limit,
  (c) the full `movement analyze` including the report (a fresh process),
and prints frames/s for each, the ratios c/b and c/a, the real-time factor
(video duration / analysis time) and the analysis's peak memory; then where (c)'s
time went, per stage (wall and CPU seconds, from the session's ``timing_s``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2

# This checkout's movement, whatever is installed (the analysis runs in a subprocess
# from the same path: RUNNER is run with this checkout as its working directory).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from movement import synth  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # for figures, beside this file
from figures import (  # noqa: E402
    RunInfo,
    headline,
    printed,
    publish,
    run_info,
    table,
    write_docs_option,
)

RUNNER = """
import resource, sys
from movement.cli import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def make(folder: Path, name: str, size: tuple[int, int], repeats: int = 1) -> Path:
    """A standard consult (the sample's amplitudes), repeated to lengthen it."""
    steps: list[synth.StepMotion] = []
    base = synth.standard_steps(synth.SAMPLE_AMPLITUDES)
    period = max(s.end_s for s in base) + 2.0
    for k in range(repeats):
        steps += [
            synth.StepMotion(s.name, s.start_s + k * period, s.peak_s + k * period,
                             s.end_s + k * period, s.right_mm, s.left_mm)
            for s in base
        ]
    spec = synth.SynthSpec(steps=tuple(steps), duration_s=period * repeats, frame_size=size,
                           roll_deg=2.0, shift_px=8.0, zoom=0.02, noise_sigma=1.0)
    path = folder / f"{name}.mp4"
    synth.make_video(spec, path)
    return path


def decode_only(path: Path) -> tuple[int, float]:
    cap = cv2.VideoCapture(str(path))
    t0 = time.perf_counter()
    n = 0
    while cap.grab() and cap.retrieve()[0]:
        n += 1
    return n, time.perf_counter() - t0


def decode_and_mesh(path: Path) -> tuple[int, float]:
    import mediapipe as mp

    mesh = mp.solutions.face_mesh.FaceMesh(
        static_image_mode=False, max_num_faces=1, refine_landmarks=True
    )
    cap = cv2.VideoCapture(str(path))
    t0 = time.perf_counter()
    n = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        mesh.process(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        n += 1
    mesh.close()
    return n, time.perf_counter() - t0


def _disk_bytes(folder: Path) -> int:
    """Bytes allocated on disk under ``folder`` (sparse files count what they hold)."""
    total = 0
    for f in folder.rglob("*"):
        try:
            total += f.lstat().st_blocks * 512
        except OSError:  # removed while we looked
            pass
    return total


def full_analysis(path: Path, out: Path) -> tuple[float, float, float]:
    """Wall time of the whole command, its peak resident memory (MB) and the peak disk
    its temporary files took (MB, sampled every 0.2 s: the frame cache); the session
    (with its per-stage timing) is left in ``out``."""
    tmp = Path(tempfile.mkdtemp(prefix="movement-speed-tmp-"))
    peak_disk = [0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", RUNNER, "analyze", str(path), "--out", str(out), "-q", "--force"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp)},
    )
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.2):
            peak_disk[0] = max(peak_disk[0], _disk_bytes(tmp))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, stderr = proc.communicate()
    done.set()
    watcher.join()
    wall = time.perf_counter() - t0
    shutil.rmtree(tmp, ignore_errors=True)
    if proc.returncode != 0:
        said = [x for x in stderr.strip().splitlines() if not x.startswith("MAXRSS_KB")]
        raise SystemExit(f"analyze failed (exit {proc.returncode}): {said[-1] if said else ''}")
    kb = next(int(x.split()[1]) for x in stderr.splitlines() if x.startswith("MAXRSS_KB"))
    return wall, kb / 1024, peak_disk[0] / 2**20


REPEAT = 3
"""Each of (a), (b) and (c) is timed this many times, interleaved, and the fastest kept:
other work on the machine only ever adds time, and on the two-core machine the same
analysis took from 17 to 28 s within an hour."""


def measure(path: Path, folder: Path, repeat: int = REPEAT) -> dict:
    out = folder / f"{path.stem}-session"
    ta = tb = tc = float("inf")
    mem, stages = 0.0, {}
    for _ in range(repeat):
        n, t = decode_only(path)
        ta = min(ta, t)
        tb = min(tb, decode_and_mesh(path)[1])
        t, m, _ = full_analysis(path, out)
        mem = max(mem, m)
        if t < tc:
            tc = t
            stages = json.loads((out / "session.json").read_text())["clips"][0]["timing_s"]
    fps = cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FPS)
    return dict(video=path.name, frames=n, duration_s=n / fps, a_fps=n / ta, b_fps=n / tb,
                c_fps=n / tc, c_over_b=tc / tb, c_over_a=tc / ta, realtime=(n / fps) / tc,
                peak_mb=mem, total_s=tc, decode_mesh_s=tb, stages=stages, repeat=repeat)


def profile_rows(r: dict) -> list[list[str]]:
    """Where one analysis's time went: each stage's wall and CPU seconds (CPU counts
    every thread, so it can exceed the wall time), its share of the whole command,
    and what is left: start-up (imports), the outputs and the report."""
    rows = []
    for stage, t in r["stages"].items():
        rows.append([stage, f"{t['wall']:.2f}", f"{t['cpu']:.2f}",
                     f"{100 * t['wall'] / r['total_s']:.0f} %"])
    rest = r["total_s"] - sum(t["wall"] for t in r["stages"].values())
    rows.append(["start-up, outputs and report", f"{rest:.2f}", "",
                 f"{100 * rest / r['total_s']:.0f} %"])
    rows.append(["whole command", f"{r['total_s']:.2f}", "", "100 %"])
    rows.append(["(b) decode + face mesh alone", f"{r['decode_mesh_s']:.2f}", "", ""])
    return rows


def figures_page(info: RunInfo, rows: list[dict], memory: str, summary: str) -> str:
    """The generated ``docs/figures/speed.md``: one row per video of :func:`measure`."""
    body = table(
        ["video", "frames", "(a) decode, frames/s", "(b) decode + face mesh, frames/s",
         "(c) full analysis, frames/s", "c/b (time vs decode + mesh)", "c/a (time vs decode)",
         "real-time factor", "peak memory MB"],
        [[r["video"].removesuffix(".mp4"), str(r["frames"]), f"{r['a_fps']:.0f}",
          f"{r['b_fps']:.1f}", f"{r['c_fps']:.1f}", f"{r['c_over_b']:.2f}",
          f"{r['c_over_a']:.1f}", f"{r['realtime']:.2f}x", f"{r['peak_mb']:.0f}"]
         for r in rows])
    notes = (
        "\nEach video is a generated standard consult (the sample's amplitudes, mild head"
        " motion, 30 fps). (a) decoding only, (b) decoding + one MediaPipe face mesh call per"
        " frame (tracking mode, one face, refined iris), (c) the whole `movement analyze`"
        " including the report, in a fresh process. The real-time factor is video duration"
        " / analysis time (above 1: faster than real time); c/b is what the analysis costs"
        " beyond the tracker's own limit. Ratios are measured within one run, since the"
        f" machine's load varies; each time is the fastest of {rows[0]['repeat']} runs,"
        " interleaved (the stage profile is that of the fastest analysis; peak memory the"
        " largest).\n"
    )
    profile = "".join(
        f"\n### {r['video'].removesuffix('.mp4')} ({r['duration_s']:.1f} s of video)\n\n"
        + table(["stage", "wall s", "CPU s", "share of wall"], profile_rows(r)) for r in rows)
    top = headline([
        (f"speed, {r['video'].removesuffix('.mp4').removeprefix('consult-')}: analysis / "
         "real time; time vs decode + face mesh",
         f"{r['realtime']:.2f}x real time; {r['c_over_b']:.2f}x decode + mesh") for r in rows])
    return (info.header("Speed benchmark") + top + "\n## Throughput\n\n" + body + notes
            + "\n## Where the time goes\n" + profile + printed([memory, summary]))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memory", action="store_true", help="also compare 1- and 5-minute videos")
    ap.add_argument("--keep", type=Path, default=None, help="keep the videos in this folder")
    ap.add_argument("--repeat", type=int, default=REPEAT,
                    help=f"time each measurement this many times, keep the fastest "
                    f"(default {REPEAT})")
    write_docs_option(ap, "speed")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    info = run_info("benchmarks/speed.py", argv)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="movement-speed-"))
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, size in (("consult-1080p30", (1920, 1080)), ("consult-720p30", (1280, 720))):
        path = folder / f"{name}.mp4"
        if not path.exists():
            make(folder, name, size)
        rows.append(measure(path, folder, max(args.repeat, 1)))
    head = (f"{'video':<18} {'frames':>6} {'(a) decode':>11} {'(b) +mesh':>10} {'(c) full':>9} "
            f"{'c/b':>5} {'c/a':>6} {'x real time':>11} {'peak MB':>8}")
    print(head)
    for r in rows:
        print(f"{r['video'][:-4]:<18} {r['frames']:>6} {r['a_fps']:>9.0f}/s {r['b_fps']:>8.1f}/s "
              f"{r['c_fps']:>7.1f}/s {r['c_over_b']:>5.2f} {r['c_over_a']:>6.1f} "
              f"{r['realtime']:>10.2f}x {r['peak_mb']:>8.0f}")
    for r in rows:
        print(f"\n{r['video'][:-4]}: where the time went (wall s, CPU s, share)")
        for stage, wall, cpu, share in profile_rows(r):
            print(f"  {stage:<40} {wall:>7} {cpu:>7} {share:>6}")
    memory = ""
    if args.memory:
        mem = []
        for name, reps in (("memory-1min", 2), ("memory-5min", 10)):
            path = folder / f"{name}.mp4"
            if not path.exists():
                make(folder, name, (960, 540), repeats=reps)
            mem.append(full_analysis(path, folder / f"{name}-session") + (reps * 28.5,))
        memory = (f"memory: {mem[0][3]:.0f} s video {mem[0][1]:.0f} MB, {mem[1][3]:.0f} s video "
                  f"{mem[1][1]:.0f} MB, ratio {mem[1][1] / mem[0][1]:.2f}; temporary files "
                  f"at most {mem[0][2]:.0f} and {mem[1][2]:.0f} MB")
        print(memory)
    r = rows[0]
    summary = (f"SPEED 1080p30: full {r['c_fps']:.1f} frames/s = {r['realtime']:.2f}x real time, "
               f"c/b {r['c_over_b']:.2f}, c/a {r['c_over_a']:.1f}")
    print(summary)
    (folder / "speed.json").write_text(json.dumps(rows, indent=2))
    if args.write_docs:
        publish(args.write_docs, figures_page(info, rows, memory, summary))


if __name__ == "__main__":
    main()
