"""The accuracy benchmark's consistency checks, which need no truth.

Test-retest (every step performed twice in one generated consult), flip
consistency of a generated consult (flipped copies analysed with ``--mirrored``),
and the same flips on the real clip in ``../shared/data`` (skipped when absent).
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from cases import (
    HEAD,
    MILD,
    REAL_CLIP,
    SD,
    STEPS,
    Case,
    fnum,
    pattern,
    read_rows,
    run_cli,
    write_flipped,
)

FINDING = ("ok", "low")
"""Qualities whose values the report lists as findings (``unusable`` ones never are)."""


def mean_abs_diff(
    a: dict, b: dict, swap: bool = False, crease: bool = False, findings: bool = False
) -> tuple[float, list[tuple]]:
    """Mean |difference| over every side of every row found (finite) in both runs:
    millimetre rows, or (``crease``) the crease-index rows, never mixed. With
    ``findings``, only rows that are findings (:data:`FINDING`) in both runs."""
    diffs, detail = [], []
    for key, ra in a.items():
        rb = b.get(key)
        if rb is None or (key[2] == "crease") != crease:
            continue
        if findings and not (ra["quality"] in FINDING and rb["quality"] in FINDING):
            continue
        va = (fnum(ra["right_mm"]), fnum(ra["left_mm"]))
        vb = (fnum(rb["right_mm"]), fnum(rb["left_mm"]))
        if swap:
            vb = vb[::-1]
        if not all(np.isfinite(va + vb)):
            continue
        d = (vb[0] - va[0], vb[1] - va[1])
        diffs += [abs(d[0]), abs(d[1])]
        detail.append((key, va, vb, d, ra["quality"], rb["quality"]))
    return (float(np.mean(diffs)) if diffs else float("nan")), detail


def interval_holds(a: dict, b: dict, swap: bool = False) -> tuple[int, int]:
    """Over the millimetre sides that are findings in both runs: how many of ``a``'s
    values lie within ``b``'s 95 % interval, of how many (the intervals' check where
    no truth exists: a copy of the same recording should hold the original's value)."""
    k = n = 0
    for key, ra in a.items():
        rb = b.get(key)
        if rb is None or key[2] in ("crease", "movements"):
            continue
        if not (ra["quality"] in FINDING and rb["quality"] in FINDING):
            continue
        sides = (("right", "left"), ("left", "right")) if swap else (("right", "right"),
                                                                      ("left", "left"))
        for sa, sb in sides:
            v, lo, hi = fnum(ra[f"{sa}_mm"]), fnum(rb.get(f"{sb}_lo")), fnum(rb.get(f"{sb}_hi"))
            if np.isfinite([v, lo, hi]).all():
                n += 1
                k += lo <= v <= hi
    return k, n


def interval_words(figs: dict[str, float]) -> str:
    """The flip's interval check in words: the share of the original's values the
    flipped copy's 95 % intervals hold, or why there is none (the real clip's steps read
    with cues are unusable, and resting rows carry no interval)."""
    share = figs.get("flip+m interval holds")
    if share is None:
        return "no finding with a 95 % interval in both runs to check the intervals on"
    return f"the flipped copy's 95 % interval holds the original's value for {100 * share:.0f} %"


def flag_disagreements(a: dict, b: dict) -> list[str]:
    """Rows that are a finding in one run and ``unusable`` in the other.

    The findings-only figure leaves out values flagged unusable in both runs (the
    report never lists them); a flag that changes under the flip is an
    inconsistency the clinician would see, so it is listed, not left out quietly.
    """
    return [
        f"{k[0]}/{k[1]} ({a[k]['quality']} -> {b[k]['quality']})"
        for k in sorted(set(a) & set(b))
        if (a[k]["quality"] in FINDING) != (b[k]["quality"] in FINDING)
        and "unusable" in (a[k]["quality"], b[k]["quality"])
    ]


def one_sided(a: dict, b: dict) -> list[str]:
    """Rows with numbers in one run and none in the other (also an inconsistency)."""
    def has(r: dict | None) -> bool:
        return r is not None and np.isfinite(fnum(r["right_mm"]) + fnum(r["left_mm"]))

    return [
        f"{k[0]}/{k[1]} ({'first' if has(a.get(k)) else 'second'} run only)"
        for k in sorted(set(a) | set(b))
        if has(a.get(k)) != has(b.get(k))
    ]


def print_pairs(title: str, detail: list[tuple], mad: float, out: Callable[[str], None]) -> None:
    out(f"  {title}: mean |difference| {mad:.2f} mm over {2 * len(detail)} values")
    for key, va, vb, d, qa, qb in detail:
        out(f"     {key[0]:<7} {key[1]:<20} R {va[0]:6.2f} -> {vb[0]:6.2f} ({d[0]:+.2f})"
            f"   L {va[1]:6.2f} -> {vb[1]:6.2f} ({d[1]:+.2f})   quality {qa}/{qb}")


def write_cues(path: Path, cues: dict[str, tuple[float, float]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "start_s", "end_s"])
        for k, (a, b) in cues.items():
            w.writerow([k, f"{a:.3f}", f"{b:.3f}"])
    return path


def cli_task(args: tuple[str, str, tuple[str, ...]]) -> dict:
    """One ``movement analyze`` run (a pool task): exit code, error, asymmetry rows."""
    video, out, extra = args
    r = run_cli(Path(video), Path(out), *extra)
    return dict(code=r.code, error=r.error, rows=read_rows(r.out) if r.code == 0 else {},
                seconds=r.seconds)


RETEST = {
    "retest-mild": dict(frame_size=SD, **MILD),
    "retest-head": dict(frame_size=SD, **HEAD),
}


def make_retest(args: tuple[str, int, str]) -> dict:
    """A consult in which every step is performed twice, with the same amplitudes.

    SynthSpec accepts a step name twice; the protocol's cues take one window per
    step, so the video is analysed twice: once with the first performance of each
    step cued, once with the second.
    """
    name, seed, workdir = args
    from movement import synth

    d = Path(workdir) / name
    d.mkdir(parents=True, exist_ok=True)
    amps = pattern(Case(name, name, "mix", seed))
    steps, t = [], 1.5
    for _ in range(2):
        for s in STEPS:
            steps.append(synth.StepMotion(s, t, t + 1.5, t + 3.0, *amps[s]))
            t += 5.0
    spec = synth.SynthSpec(steps=tuple(steps), duration_s=t, fps=30.0, seed=seed,
                           **RETEST[name])
    truth = synth.make_video(spec, d / "twice.mp4")
    tasks = []
    for k in range(2):
        sts = truth["steps"][5 * k : 5 * k + 5]
        cues = {st["name"]: (st["start_s"] - 0.3, st["end_s"] + 0.3) for st in sts}
        cfile = write_cues(d / f"cues{k + 1}.csv", cues)
        tasks.append((str(d / "twice.mp4"), str(d / f"out{k + 1}"), ("--cues", str(cfile))))
    truth_rows = {st["name"]: st["groups"][0] for st in truth["steps"][:5]}
    return dict(name=name, tasks=tasks, truth=truth_rows)


def make_generated(args: tuple[Case, str]) -> dict:
    case, workdir = args
    from movement import synth

    d = Path(workdir) / case.name
    d.mkdir(parents=True, exist_ok=True)
    spec = synth.standard_spec(pattern(case), fps=30.0, seed=case.seed, **case.spec)
    truth = synth.make_video(spec, d / "consult.mp4")
    return dict(video=str(d / "consult.mp4"), truth=truth)


FLIP_RUNS = (
    # key, copy written, --mirrored, compare with sides swapped, title
    ("flip+m", "flip.mp4", True, False,
     "mirror consistency: flipped copy (mp4v) + --mirrored vs original"),
    ("lossless+m", "flip.avi", True, False,
     "flipped copy (lossless FFV1) + --mirrored vs original"),
    ("reencode", "same.mp4", False, False, "re-encode only (mp4v, not flipped) vs original"),
    ("lossless-noflag", "flip.avi", False, True,
     "mirror equivariance: lossless flipped copy WITHOUT --mirrored, sides swapped, vs original"),
)


def flip_tasks(label: str, video: Path, work: Path, extra: tuple[str, ...]) -> dict[str, tuple]:
    """Write the flipped / re-encoded copies of ``video`` and list the analyses to run."""
    d = work / f"flip-{label}"
    d.mkdir(parents=True, exist_ok=True)
    write_flipped(video, d / "flip.mp4", "mp4v")
    write_flipped(video, d / "flip.avi", "FFV1")
    write_flipped(video, d / "same.mp4", "mp4v", flip=False)
    tasks = {"orig": (str(video), str(d / "orig"), extra)}
    for key, copy, mirrored, _, _ in FLIP_RUNS:
        tasks[key] = (str(d / copy), str(d / key), (("--mirrored",) if mirrored else ()) + extra)
    return tasks


def flip_report(res: dict[str, dict], out: Callable[[str], None]) -> dict[str, float]:
    for k, r in res.items():
        if r["code"]:
            out(f"  {k}: ANALYSIS FAILED: {r['error']}")
    figures = {}
    for key, _, _, swap, title in FLIP_RUNS:
        mad, detail = mean_abs_diff(res["orig"]["rows"], res[key]["rows"], swap)
        print_pairs(title, detail, mad, out)
        cmad, cdetail = mean_abs_diff(res["orig"]["rows"], res[key]["rows"], swap, crease=True)
        if cdetail:
            out(f"     lines: mean |difference| {cmad:.2f} (crease index) over "
                f"{2 * len(cdetail)} values")
            figures[key + " lines"] = cmad
        lone = one_sided(res["orig"]["rows"], res[key]["rows"])
        if lone:
            out("     values in one run only: " + ", ".join(lone))
        fmad, fdetail = mean_abs_diff(res["orig"]["rows"], res[key]["rows"], swap, findings=True)
        flips = flag_disagreements(res["orig"]["rows"], res[key]["rows"])
        out(f"     findings only (ok/low in both runs): {fmad:.2f} mm over {2 * len(fdetail)}"
            f" values; unusable in one run only: {', '.join(flips) if flips else 'none'}")
        held, n_iv = interval_holds(res["orig"]["rows"], res[key]["rows"], swap)
        if n_iv:
            out(f"     the copy's 95 % interval holds the original's value: {held}/{n_iv}")
            figures[key + " interval holds"] = held / n_iv
        figures[key] = mad
        figures[key + " findings"] = fmad
        figures[key + " flag changes"] = float(len(flips))
    return figures


REAL_CUES = {"frown": (1.0, 4.0), "smile": (10.0, 19.0)}
"""Windows forced on the real clip: crying with the brows pulled together and
down (1-4 s, before the hands cover the face) and the laughing part (10-19 s)."""


def consistency(a: argparse.Namespace, pool: ProcessPoolExecutor, work: Path,
                out: Callable[[str], None]) -> dict[str, float]:
    """Test-retest, flip consistency (generated) and the real clip; returns the figures."""
    full = not a.quick
    figures: dict[str, float] = {}
    retest_names = list(RETEST) if full else []
    if a.real and not retest_names:
        retest_names = ["retest-mild"]
    gen_retest = [pool.submit(make_retest, (n, 1000 + i, str(work)))
                  for i, n in enumerate(retest_names)]
    flip_case = Case("flip-generated", "flip", "mix", 1100, dict(frame_size=SD, **MILD))
    gen_flip = pool.submit(make_generated, (flip_case, str(work))) if full else None
    real_jobs: dict[str, object] = {}
    if REAL_CLIP.exists():
        cfile = write_cues(work / "real_cues.csv", REAL_CUES)
        tasks = flip_tasks("real", REAL_CLIP, work, ("--cues", str(cfile)))
        tasks["plain"] = (str(REAL_CLIP), str(work / "real-plain"), ())
        real_jobs = {k: pool.submit(cli_task, t) for k, t in tasks.items()}
    retest_jobs = []
    for g in gen_retest:
        r = g.result()
        retest_jobs.append((r, [pool.submit(cli_task, t) for t in r["tasks"]]))
    flip_jobs, flip_truth = {}, None
    if gen_flip is not None:
        g = gen_flip.result()
        flip_truth = g["truth"]
        flip_jobs = {k: pool.submit(cli_task, t)
                     for k, t in flip_tasks("generated", Path(g["video"]), work, ()).items()}

    if retest_jobs:
        out("\n# Test-retest: every step performed twice in one generated consult")
        out("  (same amplitudes both times; each performance analysed with --cues on its window)")
    agree = []
    for r, jobs in retest_jobs:
        runs = [j.result() for j in jobs]
        out(f"  {r['name']} ({', '.join(f'{k}={v}' for k, v in RETEST[r['name']].items())})")
        for k, run in enumerate(runs):
            if run["code"]:
                out(f"     run {k + 1}: ANALYSIS FAILED: {run['error']}")
        out(f"     {'step':<7} {'truth R/L':>11} {'1st R/L':>13} {'2nd R/L':>13}"
            f" {'2nd-1st R/L':>13}  dominant 1st/2nd  quality 1st/2nd")
        for s in STEPS:
            t = r["truth"][s]
            key = (s, t["muscle_group"], t["measure"])
            a1, a2 = runs[0]["rows"].get(key), runs[1]["rows"].get(key)
            if a1 is None or a2 is None:
                out(f"     {s:<7} missing in a run")
                continue
            v1 = (fnum(a1["right_mm"]), fnum(a1["left_mm"]))
            v2 = (fnum(a2["right_mm"]), fnum(a2["left_mm"]))
            d = (v2[0] - v1[0], v2[1] - v1[1])
            agree += [abs(x) for x in d if np.isfinite(x)]
            out(f"     {s:<7} {t['right_mm']:5.2f}/{t['left_mm']:5.2f} {v1[0]:6.2f}/{v1[1]:6.2f}"
                f" {v2[0]:6.2f}/{v2[1]:6.2f} {d[0]:+6.2f}/{d[1]:+6.2f}"
                f"  {a1['dominant_side'] + '/' + a2['dominant_side']:<17}"
                f" {a1['quality']}/{a2['quality']}")
    if agree:
        figures["retest"] = float(np.mean(agree))
        out(f"  TEST-RETEST mean |2nd - 1st| {np.mean(agree):.2f} mm, median "
            f"{np.median(agree):.2f} mm, max {np.max(agree):.2f} mm ({len(agree)} values)")

    if flip_jobs:
        out("\n# Flip consistency on a generated consult (960x540, mild motion, no cues)")
        res = {k: j.result() for k, j in flip_jobs.items()}
        figs = flip_report(res, out)
        errs = []
        for st in flip_truth["steps"]:
            g = st["groups"][0]
            row = res["orig"]["rows"].get((st["name"], g["muscle_group"], g["measure"]))
            if row:
                errs += [abs(fnum(row["right_mm"]) - g["right_mm"]),
                         abs(fnum(row["left_mm"]) - g["left_mm"])]
        out(f"  (for scale: mean |original - truth| {np.nanmean(errs):.2f} mm)")
        out(f"  FLIP-GENERATED mirror consistency {figs['flip+m findings']:.2f} mm over findings"
            f" ({figs['flip+m']:.2f} mm counting unusable values), re-encode only "
            f"{figs['reencode findings']:.2f} mm, lossless flip {figs['lossless+m findings']:.2f}"
            f" mm, equivariance (no --mirrored, sides swapped)"
            f" {figs['lossless-noflag findings']:.2f} mm; {interval_words(figs)}")
        figures["flip-generated"] = figs["flip+m findings"]

    out(f"\n# Real footage: {REAL_CLIP.name}")
    if not real_jobs:
        out(f"  SKIPPED: {REAL_CLIP} not found")
        return figures
    res = {k: j.result() for k, j in real_jobs.items()}  # type: ignore[attr-defined]
    p = res.pop("plain")
    if p["code"]:
        out(f"  as is: ANALYSIS FAILED: {p['error']}")
    else:
        prim = {k[0]: r["quality"] for k, r in p["rows"].items() if r["primary"] == "True"}
        out("  analysed as is (no cues; not a protocol recording): "
            + ", ".join(f"{k} {v}" for k, v in prim.items()))
    out("  with cues: " + ", ".join(f"{k} {a_:g}-{b:g} s" for k, (a_, b) in REAL_CUES.items()))
    figs = flip_report(res, out)
    # The target is on the findings, the values a clinician is shown; every value
    # (unusable ones too) and the flags that change are printed beside it.
    changed = int(figs["flip+m flag changes"])
    out(f"  REAL mirror consistency {figs['flip+m findings']:.2f} mm over findings (target <="
        f" 0.3 mm; {figs['flip+m']:.2f} mm counting unusable values; {changed} flag"
        f" change{'' if changed == 1 else 's'} under the flip), re-encode only"
        f" {figs['reencode findings']:.2f} mm, lossless flip {figs['lossless+m findings']:.2f}"
        f" mm, equivariance (no --mirrored, sides swapped)"
        f" {figs['lossless-noflag findings']:.2f} mm; {interval_words(figs)}")
    figures["real"] = figs["flip+m findings"]
    figures["real (all values)"] = figs["flip+m"]
    return figures
