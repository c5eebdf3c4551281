"""Accuracy benchmark: generated consults with known truth through the real CLI.

Run by hand from the repository root::

    .venv/bin/python benchmarks/accuracy.py            # full run (~12-20 min on 2 cores)
    .venv/bin/python benchmarks/accuracy.py --quick    # 5 cases + the real clip (~5 min)
    .venv/bin/python benchmarks/accuracy.py --jobs 2 --keep /tmp/bench   # keep videos/outputs
    .venv/bin/python benchmarks/accuracy.py --keep /tmp/bench --reuse    # analyse them again
    .venv/bin/python benchmarks/accuracy.py --real     # only the real-footage checks
    .venv/bin/python benchmarks/accuracy.py --write-docs   # + docs/figures/accuracy.md

Every case is a synthetic consult made with :mod:`movement.synth` (the standard
~26 s layout, 30 fps) with its own seeded per-step amplitude pattern, analysed
with ``movement analyze VIDEO --out DIR -q`` in a subprocess, and compared with
the generator's truth. The tables and the summary line are described in
``benchmarks/README.md``; the targets are those of MEASUREMENTS.md section 5.

Consistency checks (no truth needed) follow: test-retest on a generated consult
in which every step is performed twice, flip consistency of a generated
consult, and mirror consistency of the real clip in ``../shared/data`` (skipped
when the file is absent).

The modules: :mod:`cases` (the consults and one case's run), :mod:`scoring` (the
comparison with the truth, tables and targets), :mod:`consistency` (the checks
without truth), :mod:`figures` (the generated docs page); this one is the command.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from cases import REAL_CLIP, ROOT, SECOND_FACE_FRAME, Case, all_cases, quick_cases, run_case
from consistency import consistency
from figures import (
    RunInfo,
    headline,
    printed,
    publish,
    run_info,
    table,
    write_docs_option,
)
from scoring import print_case, summarise

# ----------------------------------------------------------------------------- main


def git_state() -> str:
    """Commit of the code measured (read-only git calls)."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "--no-optional-locks", "status", "--porcelain",
             "movement", "protocols"], capture_output=True, text=True).stdout.strip()
        return (head or "?") + (" + uncommitted changes in movement/ or protocols/"
                                if dirty else "")
    except OSError:
        return "unknown"


def source_hash(pkg: Path) -> str:
    """Hash of the measured code (every ``pkg/**/*.py`` and the protocols beside it), to
    detect edits during the run."""
    import hashlib

    h = hashlib.sha256()
    files = [*pkg.rglob("*.py"), *pkg.parent.glob("protocols/*.toml")]
    for f in sorted(files, key=lambda f: f.relative_to(pkg.parent).as_posix()):
        h.update(f.relative_to(pkg.parent).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _pct(x: float, k: int, n: int) -> str:
    return f"n/a ({k}/{n})" if x != x else f"{100 * x:.1f}% ({k}/{n})"


def _mm(x: float) -> str:
    return "n/a" if x != x else f"{x:.2f}"


def _headline(summary: dict, n_cases: int) -> list[tuple[str, str]]:
    """The README's rows: dominant side, balanced and error, standard and extended."""
    rows = []
    for r in summary["table"]:
        which = r["label"].split(" ")[0]
        if which not in ("standard", "extended") or not r["values"]:
            continue
        rows.append((f"{which} steps: dominant side right (pairs >= 1 mm and 20 % apart)",
                     _pct(r["side"], r["side_ok"], r["decisive"])))
        rows.append((f"{which} steps: 'balanced' right (pairs <= 0.35 mm apart)",
                     _pct(r["balanced"], r["balanced_ok"], r["balanced_n"])))
        rows.append((f"{which} steps: error per side, median / p90",
                     f"{_mm(r['median'])} / {_mm(r['p90'])} mm ({n_cases} consults)"))
    # The three-state calls: a decisive pair called 'uncertain' is not right above, so
    # what the calls that do commit are worth, and how often they do not, go beside it.
    calls = {(steps, label.split(" >=")[0].split(" <=")[0]): val
             for steps, label, _, val in summary.get("targets", [])}
    for which in ("standard", "extended"):
        sure = calls.get((which, "calls not uncertain right"))
        unsure = calls.get((which, "decisive pairs uncertain"))
        if sure and unsure:
            rows.append((f"{which} steps: side calls not marked uncertain, right; decisive "
                         "pairs marked uncertain", f"{sure}; {unsure}"))
    return rows


def figures_page(
    info: RunInfo,
    *,
    selection: str,
    cases: list[Case],
    summary: dict,
    consistency_line: str,
    extra: list[tuple[str, str]],
) -> str:
    """The generated ``docs/figures/accuracy.md``: the run, the cases it covers, the
    table per step (from :func:`scoring.summarise`), its summary lines and targets."""
    parts = [info.header("Accuracy benchmark", extra), "\n## Cases\n\n" + selection + "\n"]
    if cases:
        parts.append("\n" + table(["case", "condition", "settings", "seed"],
                                   [[c.name, c.condition, c.describe(), str(c.seed)]
                                    for c in cases]))
    if summary:
        parts.append(
            "\n## Per step\n\nEach step's primary group; the standard total is over the"
            " standard steps' primary groups, the extended total over every group of the"
            " extended steps. Decisive side: reported dominant side equals the"
            " truth's on pairs differing >= 1 mm and >= 20 % (missing and unusable count as"
            " wrong); balanced: 'balanced' reported where the truth differs <= 0.35 mm; error:"
            " |measured - truth| per side over ok/low values; peak time: |peak - truth peak|."
            " Definitions: benchmarks/README.md.\n\n")
        parts.append(table(
            ["step", "values", "decisive side", "balanced", "median error mm", "p90 error mm",
             "peak time p90 s", "missing", "unusable"],
            [[r["label"], str(r["values"]), _pct(r["side"], r["side_ok"], r["decisive"]),
              _pct(r["balanced"], r["balanced_ok"], r["balanced_n"]), _mm(r["median"]),
              _mm(r["p90"]), _mm(r["peak_p90"]), str(r["missing"]), str(r["unusable"])]
             for r in summary["table"]]))
        parts.append(headline(_headline(summary, len(cases))))
        parts.append("\n## Targets\n\n" + table(
            ["steps", "target", "met", "value"],
            [[s, label, "met" if ok else "MISSED", val] for s, label, ok, val in
             summary["targets"]]))
    parts.append(printed([summary["summary"] if summary else "", consistency_line]))
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a handful of cases for a fast check")
    ap.add_argument("--jobs", type=int, default=2, help="parallel analyses (default 2)")
    ap.add_argument("--keep", metavar="DIR", help="keep videos and session folders in DIR")
    ap.add_argument("--reuse", action="store_true",
                    help="with --keep: analyse the videos already generated there again "
                    "(after a change to the analysis; not after one to the generator)")
    ap.add_argument("--real", action="store_true",
                    help="only the consistency checks (test-retest, flip, real clip)")
    ap.add_argument("--no-consistency", action="store_true",
                    help="skip test-retest, flip and real-clip checks")
    ap.add_argument("--only", metavar="REGEX", help="only cases whose name matches")
    write_docs_option(ap, "accuracy", "tables")
    args = sys.argv[1:] if argv is None else list(argv)
    a = ap.parse_args(args)
    if a.reuse:
        if not a.keep:
            ap.error("--reuse needs --keep DIR")
        os.environ["MOVEMENT_BENCH_REUSE"] = "1"  # read by the worker processes

    def out(s: str = "") -> None:
        print(s, flush=True)

    import movement
    from movement import __version__

    info = run_info("benchmarks/accuracy.py", args)
    t_start = time.perf_counter()
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="movement-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    out(f"movement {__version__} (git {git_state()}) accuracy benchmark"
        f"{' --quick' if a.quick else ''}{' --real' if a.real else ''};"
        f" {os.cpu_count()} cores, --jobs {a.jobs}")
    pkg = Path(movement.__file__).resolve().parent
    src0 = source_hash(pkg)
    where = "" if pkg.parent == ROOT else " -- not this checkout (PYTHONPATH)"
    out(f"Code measured: {pkg} (sources {src0}){where}")
    second = (f"; a second face from {REAL_CLIP.name} frame {SECOND_FACE_FRAME}"
              if REAL_CLIP.exists() else "; no second face (../shared/data absent)")
    out("Generated consults (movement.synth: astronaut photo" + second + "; warp fields with "
        "exact truth), standard layout ~26.5 s, 30 fps, analysed with `movement analyze -q` "
        "(subprocess).")
    out("Head turn (yaw, pitch) is not in these cases (the 2D generator warps a flat photo): "
        "benchmarks/pose.py measures it on the 3D generator.")
    summary: dict = {}
    figures: dict[str, float] = {}
    cases: list[Case] = []
    n_set = 0
    pool = ProcessPoolExecutor(max_workers=max(1, a.jobs))
    try:
        if not a.real:
            cases = quick_cases() if a.quick else all_cases()
            n_set = len(cases)
            if a.only:
                cases = [c for c in cases if re.search(a.only, c.name)]
            out(f"\n# Cases ({len(cases)})")
            results = []
            for res in pool.map(run_case, [(c, str(work)) for c in cases]):
                print_case(res, out)
                results.append(res)
            if results:
                summary = summarise(results, out)
        if not a.no_consistency:
            figures = consistency(a, pool, work, out)
    finally:
        pool.shutdown()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    minutes = (time.perf_counter() - t_start) / 60
    out(f"\nTotal time {minutes:.1f} min")
    changed = source_hash(pkg) != src0
    if changed:
        out("WARNING: movement/ or protocols/ changed during the run; the figures mix versions")
    if summary:
        out("\n" + summary["summary"])
    consistency_line = ""
    if figures:
        consistency_line = "CONSISTENCY " + " ".join(
            f"{k} {v:.2f} mm" for k, v in figures.items()
        ) + "  (retest = mean |2nd - 1st|; others = mirror consistency, flip + --mirrored)"
        out(consistency_line)
    if a.write_docs:
        which = "the quick set" if a.quick else "the full set"
        if a.real:
            selection = "No generated cases (`--real`: the consistency checks only)."
        else:
            selection = (f"{len(cases)} of the {n_set} cases of {which}"
                         + (f" (`--only '{a.only}'`)" if a.only else "") + ".")
        selection += (" Consistency checks: not run (`--no-consistency`)." if a.no_consistency
                      else " Consistency checks with a figure: "
                      + (", ".join(figures) if figures else "none") + ".")
        if not REAL_CLIP.exists():
            selection += (f" The real clip ({REAL_CLIP}) was absent: no second-face cases"
                          " and no real-footage checks.")
        extra = [("run time", f"{minutes:.1f} min, --jobs {a.jobs}"),
                 ("code measured", f"{pkg} (sources {src0})"
                  + ("; CHANGED during the run" if changed else ""))]
        publish(a.write_docs, figures_page(
            info, selection=selection, cases=cases, summary=summary,
            consistency_line=consistency_line, extra=extra), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
