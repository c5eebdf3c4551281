"""The accuracy benchmark's comparison with the truth: tables, summary lines, targets.

:func:`summarise` turns the results of :func:`cases.run_case` into the tables per
step, condition and kind of pair, the diagnostics (where the error comes from,
between recordings, dynamic lines) and the summary lines checked against the targets
of MEASUREMENTS.md section 5 (:data:`TARGETS`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from cases import BALANCED_MM, DECISIVE_MM, DECISIVE_RATIO, EXTENDED_STEPS, STEPS, Case

PEAK_TOL_S = 0.15

TARGETS = {
    "side": 0.95,  # decisive pairs: dominant side correct ('uncertain' counts as wrong)
    "balanced": 0.95,  # pairs differing <= 0.35 mm reported balanced
    "median": 0.30,  # mm
    "p90": 0.80,  # mm
    "peak": PEAK_TOL_S,  # s, p90 of |peak time error|
}


def dominant(r: float, lft: float) -> str:
    from movement.analysis.dominance import dominant_side
    from movement.protocol import Thresholds

    return dominant_side(r, lft, Thresholds(DECISIVE_MM, DECISIVE_RATIO))


def pct(x: float) -> str:
    return "  n/a" if not np.isfinite(x) else f"{100 * x:4.0f}%"


def pct1(x: float) -> str:
    """One decimal, for the summary and the targets: 162/171 is 94.7 %, not "95 %"."""
    return "n/a" if not np.isfinite(x) else f"{100 * x:.1f}%"


def q(a: Iterable[float], p: float) -> float:
    a = np.asarray([v for v in a if np.isfinite(v)], float)
    return float(np.percentile(a, p)) if len(a) else float("nan")


@dataclass
class Stats:
    decisive: int = 0
    side_ok: int = 0
    sign_ok: int = 0
    balanced: int = 0
    balanced_ok: int = 0
    errors: list[float] = field(default_factory=list)  # |measured - truth| per side
    signed: list[float] = field(default_factory=list)
    peaks: list[float] = field(default_factory=list)  # |peak error| s
    steps: int = 0
    missing: int = 0
    unusable: int = 0
    low: int = 0

    def add(self, s: dict) -> None:
        self.steps += 1
        (tr, tl), (mr, ml) = s["truth"], s["measured"]
        q_ = s["quality"]
        if q_ in ("missing", "error"):
            self.missing += 1
        elif q_ == "unusable":
            self.unusable += 1
        elif q_ == "low":
            self.low += 1
        truth_dom = dominant(tr, tl)
        if truth_dom in ("right", "left"):
            self.decisive += 1
            self.side_ok += s["dominant"] == truth_dom
            if q_ not in ("missing", "error", "unusable") and np.isfinite(mr - ml):
                self.sign_ok += (mr - ml > 0) == (truth_dom == "right")
        if abs(tr - tl) <= BALANCED_MM:
            self.balanced += 1
            self.balanced_ok += s["dominant"] == "balanced"
        if q_ in ("ok", "low"):
            for m, t in ((mr, tr), (ml, tl)):
                if np.isfinite(m):
                    self.errors.append(abs(m - t))
                    self.signed.append(m - t)
        if np.isfinite(s["peak"]) and np.isfinite(s["peak_truth"]):
            self.peaks.append(abs(s["peak"] - s["peak_truth"]))

    @property
    def side(self) -> float:
        return self.side_ok / self.decisive if self.decisive else float("nan")

    @property
    def bal(self) -> float:
        return self.balanced_ok / self.balanced if self.balanced else float("nan")

    def record(self, label: str) -> dict:
        """The figures of a row of the docs table (:func:`accuracy.figures_page`)."""
        return dict(
            label=label, values=self.steps, side=self.side, side_ok=self.side_ok,
            decisive=self.decisive, balanced=self.bal, balanced_ok=self.balanced_ok,
            balanced_n=self.balanced, median=q(self.errors, 50), p90=q(self.errors, 90),
            peak_p90=q(self.peaks, 90), missing=self.missing, unusable=self.unusable,
        )

    def row(self, label: str, width: int = 12) -> str:
        med, p90 = q(self.errors, 50), q(self.errors, 90)
        bias = float(np.mean(self.signed)) if self.signed else float("nan")
        return (
            f"{label:<{width}} {self.steps:4d}"
            f" {pct(self.side)} ({self.side_ok:2d}/{self.decisive:2d})"
            f" {pct(self.bal)} ({self.balanced_ok:2d}/{self.balanced:2d})"
            f" {med:6.2f} {p90:6.2f} {bias:+6.2f} {q(self.errors, 100):6.2f}"
            f" {q(self.peaks, 50):6.2f} {q(self.peaks, 90):6.2f} {q(self.peaks, 100):6.2f}"
            f" {self.missing:4d} {self.unusable:4d} {self.low:4d}"
        )


STATS_HEADER = (
    "{label:<{w}} {n:>4} {side:>13} {bal:>13} {med:>6} {p90:>6} {bias:>6} {mx:>6}"
    " {pk50:>6} {pk90:>6} {pkmx:>6} {miss:>4} {unus:>4} {low:>4}"
)


def stats_header(label: str, width: int = 12) -> str:
    return STATS_HEADER.format(
        label=label, w=width, n="n", side="decisive-side", bal="balanced", med="med",
        p90="p90", bias="bias", mx="max", pk50="pk50", pk90="pk90", pkmx="pkmax",
        miss="miss", unus="unus", low="low",
    )


def print_case(res: dict, out: Callable[[str], None]) -> None:
    case: Case = res["case"]
    out(f"\n## {case.name}  [{case.condition}; {case.describe()}; seed {case.seed}]"
        f"  gen {res['gen_s']:.0f} s, analyse {res['run_s']:.0f} s")
    if res["error"]:
        out(f"   ANALYSIS FAILED: {res['error']}")
    out(f"   {'step':<30} {'pair':<9} {'truth R/L':>11} {'measured R/L':>13}"
        f" {'error R/L':>13}  {'dominant truth/meas':<21} {'peak err':>8}  quality")
    for s in res["steps"]:
        (tr, tl), (mr, ml) = s["truth"], s["measured"]
        pe = s["peak"] - s["peak_truth"]
        qual = s["quality"] + (f" ({s['reason']})" if s["quality"] not in ("ok",) else "")
        if s["moves_truth"]:
            qual += (f"; movements truth {s['moves_truth'][0]}/{s['moves_truth'][1]}"
                     f" measured {s['moves'][0]:.0f}/{s['moves'][1]:.0f}")
        out(
            f"   {s['label']:<30} {s['kind']:<9} {tr:5.2f}/{tl:5.2f} {mr:6.2f}/{ml:6.2f}"
            f" {mr - tr:+6.2f}/{ml - tl:+6.2f}  {dominant(tr, tl) + '/' + s['dominant']:<21}"
            f" {pe:+8.2f}  {qual}"
        )
    for ln in res.get("lines", []):
        (tr, tl), (mr, ml) = ln["truth"], ln["measured"]
        label = f"{ln['step']} lines/{ln['region']}"
        out(f"   {label:<30} {ln['kind']:<9} depth {tr:.2f}/{tl:.2f}"
            f" -> crease index {mr:5.2f}/{ml:5.2f}  dominant {ln['kind']}/{ln['dominant']}"
            f"  {ln['quality']}")
    for name, quality in res.get("skipped", []):
        out(f"   {name:<30} skipped by the patient -> reported {quality}"
            f"{'' if quality == 'missing' else '  (WRONG: should be missing)'}")


def decomposition(results: list[dict], out: Callable[[str], None]) -> str:
    """Where the error comes from: the same measured values against the reference
    truth, against the truth at the tracked points (:func:`tracked_truth`), and that
    again with the generator's own mm/px instead of the iris scale the analysis read.
    Diagnostic only; the targets are on the reference truth."""
    variants = ("reference", "at tracked points", "tracked + true scale")
    per: dict[str, list[Stats]] = {}
    ratios = [r["scale_ratio"] for r in results if np.isfinite(r.get("scale_ratio", np.nan))]
    for res in results:
        k = res.get("scale_ratio", np.nan)
        for s in res["steps"]:
            if not s["primary"] or not np.isfinite(s["truth_tracked"]).all():
                continue
            group = "standard" if s["step"] in STEPS else "extended"
            mr, ml = s["measured"]
            alts = (s, {**s, "truth": s["truth_tracked"]},
                    {**s, "truth": s["truth_tracked"], "measured": (mr / k, ml / k),
                     "dominant": dominant(mr / k, ml / k) if s["quality"] in ("ok", "low")
                     else s["dominant"]})
            for key in (s["step"], group):
                for st, alt in zip(per.setdefault(key, [Stats() for _ in variants]), alts,
                                   strict=True):
                    st.add(alt)
    out("\n# Where the error comes from (diagnostic; the targets use the reference truth)")
    out("reference = the generator's landmarks on the base photo; at tracked points = the\n"
        "same fields read at the landmarks the analysis found on each step's keyframe\n"
        "(the median of 8 cut detections); + true scale = measured values\n"
        "rescaled by the generator's mm/px over the iris scale the analysis read. Primary\n"
        "values; decisive-side (ok/decisive), median |error| mm, bias mm per column.")
    head = f"{'step':<12}" + "".join(f" {v:>26}" for v in variants)
    out(head)
    summary = ""
    order = [k for k in (*STEPS, *EXTENDED_STEPS, "standard", "extended") if k in per]
    for key in order:
        cells = "".join(
            f" {pct(st.side)} ({st.side_ok:2d}/{st.decisive:2d}) {q(st.errors, 50):4.2f}"
            f" {float(np.mean(st.signed)) if st.signed else np.nan:+5.2f}"
            for st in per[key]
        )
        out(f"{key:<12}{cells}")
        if key == "standard":
            summary = ("DECOMPOSITION standard decisive-side " + ", ".join(
                f"{v} {pct1(st.side)}" for v, st in zip(variants, per[key], strict=True)))
    if ratios:
        out(f"iris scale read / generator's mm/px: median {np.median(ratios):.3f}"
            f" (range {min(ratios):.3f}-{max(ratios):.3f}, {len(ratios)} videos)")
        summary += f"; iris scale median {np.median(ratios):.3f}"
    return summary


def between_recordings(results: list[dict], out: Callable[[str], None]) -> str:
    """How far two recordings of the same movement can read apart: per step, the
    spread of the difference between two cases' signed errors (every pair of
    primary side values of ok/low quality, across conditions). A change between
    two visits smaller than this is within what the measurement itself reproduces,
    before the patient's own variation (effort, pose, light) adds to it."""
    signed: dict[str, list[float]] = {}
    for res in results:
        for s in res["steps"]:
            if not s["primary"] or s["quality"] not in ("ok", "low") or s["moves_truth"]:
                continue
            for m, t in zip(s["measured"], s["truth"], strict=True):
                if np.isfinite(m):
                    signed.setdefault(s["step"], []).append(m - t)
    out("\n# Between recordings (what a change between two visits must exceed)")
    out("|error of one recording - error of another| over every pair of primary side values\n"
        "of a step across the cases (conditions differ, the movement is known in both).")
    out(f"{'step':<12} {'values':>6} {'median':>7} {'p90':>6} {'p95':>6}")
    p95 = {}
    for st in (*STEPS, *EXTENDED_STEPS):
        e = np.asarray(signed.get(st, []))
        if len(e) < 4:
            continue
        d = np.abs(e[:, None] - e[None, :])[np.triu_indices(len(e), 1)]
        p95[st] = float(np.percentile(d, 95))
        out(f"{st:<12} {len(e):6d} {np.median(d):7.2f} {np.percentile(d, 90):6.2f}"
            f" {p95[st]:6.2f}")
    return "BETWEEN RECORDINGS p95 " + " ".join(f"{k} {v:.2f}" for k, v in p95.items())


def summarise(results: list[dict], out: Callable[[str], None]) -> dict:
    """Tables and target checks: the standard steps' primary values (the headline,
    comparable across versions) and, separately, every value of the extended steps."""
    overall, ext = Stats(), Stats()
    per_label: dict[str, Stats] = {}
    per_cond: dict[str, Stats] = {}
    per_kind: dict[str, Stats] = {}
    moves_ok = moves_n = skip_ok = skip_n = 0
    for res in results:
        for _name, quality in res.get("skipped", []):
            skip_n += 1
            skip_ok += quality == "missing"
        for s in res["steps"]:
            per_label.setdefault(s["label"], Stats()).add(s)
            if s["step"] in EXTENDED_STEPS:
                ext.add(s)
            if not s["primary"] or s["step"] not in STEPS:
                continue
            cond = per_cond.setdefault(res["case"].condition, Stats())
            for st in (overall, cond, per_kind.setdefault(s["kind"], Stats())):
                st.add(s)
        for s in res["steps"]:
            if s["moves_truth"]:
                for m, t in zip(s["moves"], s["moves_truth"], strict=True):
                    moves_n += 1
                    moves_ok += bool(np.isfinite(m) and abs(m - t) <= 2)
    legend = (
        "n = values; decisive-side = reported dominant side equals the truth's on pairs whose\n"
        "truth differs >= 1 mm and >= 20 % (missing/unusable count as wrong); balanced =\n"
        "'balanced' reported where truth differs <= 0.35 mm; med/p90/max = |measured - truth|\n"
        "mm per side over ok/low values; bias = mean signed error (mm); pk50/pk90/pkmax =\n"
        "|peak time - truth| s; miss = steps not found; unus = unusable; low = low quality.\n"
        "step/group rows are secondary groups; speech values are dynamic ranges (95th\n"
        "percentile over the step), with no peak time."
    )
    out("\n# Per step and group")
    w = max(len(k) for k in per_label) + 1
    out(stats_header("step", w))
    labels = sorted(per_label, key=lambda k: ((STEPS + EXTENDED_STEPS).index(k.split("/")[0]),
                                             "/" in k, k))
    for k in labels:
        out(per_label[k].row(k, w))
    # The docs table: each step's primary group, then the headline totals.
    table = [per_label[k].record(k) for k in labels if "/" not in k]
    table.append(overall.record("standard (primary groups)"))
    if ext.steps:
        table.append(ext.record("extended (every group)"))
    out(overall.row("standard", w))
    if ext.steps:
        out(ext.row("extended", w))
    out("\n# Per condition (standard steps, primary)")
    w = max(len(k) for k in per_cond) + 1
    out(stats_header("condition", w))
    for k, st in per_cond.items():
        out(st.row(k, w))
    out("\n# Per truth pair kind (standard steps, primary)")
    out(stats_header("pair", 12))
    for k in ("right", "left", "balanced", "still", "between"):
        if k in per_kind:
            out(per_kind[k].row(k, 12))
    out("\n" + legend)
    sign = overall.sign_ok / overall.decisive if overall.decisive else float("nan")
    out(f"\nSide by sign alone (measured R-L has the truth's sign, decisive pairs): {pct(sign)}")
    if moves_n:
        out(f"Speech movements counted within +-2 of the truth: {moves_ok}/{moves_n} sides")
    if skip_n:
        out(f"Skipped steps reported missing (never invented): {skip_ok}/{skip_n}")

    def line(label: str, st: Stats, n_cases: int) -> str:
        return (
            f"{label} decisive-side {pct1(st.side)} balanced {pct1(st.bal)}"
            f" median {q(st.errors, 50):.2f} mm p90 {q(st.errors, 90):.2f} mm"
            f" peak-time p90 {q(st.peaks, 90):.2f} s (max {q(st.peaks, 100):.2f} s)"
            f" missing {st.missing} unusable {st.unusable}"
            f" ({n_cases} cases, {st.steps} values)"
        )

    def checks(st: Stats) -> list[tuple[str, bool, str]]:
        within = np.mean(np.asarray(st.peaks) <= PEAK_TOL_S) if st.peaks else float("nan")
        return [
            ("decisive side >= 95 %", st.side >= TARGETS["side"], pct1(st.side)),
            ("balanced >= 95 % (pairs <= 0.35 mm)", st.bal >= TARGETS["balanced"],
             pct1(st.bal)),
            ("median |error| <= 0.3 mm", q(st.errors, 50) <= TARGETS["median"],
             f"{q(st.errors, 50):.2f} mm"),
            ("p90 |error| <= 0.8 mm", q(st.errors, 90) <= TARGETS["p90"],
             f"{q(st.errors, 90):.2f} mm"),
            ("peak time p90 within +-0.15 s", q(st.peaks, 90) <= TARGETS["peak"],
             f"{q(st.peaks, 90):.2f} s; {pct(within).strip()} of steps within, "
             f"max {q(st.peaks, 100):.2f} s"),
        ]

    from calibration import calibration

    intervals = calibration(results, out)
    decomposed = decomposition(results, out)
    between = between_recordings(results, out)
    crease_met = crease_summary(results, out)
    n_std = sum(1 for r in results if any(s["step"] in STEPS for s in r["steps"]))
    n_ext = sum(1 for r in results if r["case"].protocol == "extended")
    summary = line("ACCURACY", overall, n_std)
    out("\n" + summary)
    met = {}
    targets: list[tuple[str, str, bool, str]] = []  # (steps, target, met, value)
    out("TARGETS (MEASUREMENTS.md section 5), standard steps:")
    for label, ok, val in checks(overall):
        out(f"  {'MET   ' if ok else 'MISSED'} {label:<38} {val}")
        met[label] = bool(ok)
        targets.append(("standard", label, bool(ok), val))
    if ext.steps:
        summary += "\n" + line("EXTENDED", ext, n_ext)
        out(line("EXTENDED", ext, n_ext))
        out("TARGETS, extended steps (every group):")
        for label, ok, val in checks(ext):
            out(f"  {'MET   ' if ok else 'MISSED'} {label:<38} {val}")
            met["extended " + label] = bool(ok)
            targets.append(("extended", label, bool(ok), val))
    if crease_met:
        summary += "\n" + crease_met.pop("line")
        targets += [("dynamic lines", label, bool(ok), val)
                    for label, ok, val in crease_met.pop("checks")]
        met.update(crease_met)
    summary += "\n" + intervals["line"]
    targets += intervals["targets"]
    met.update({f"{st} {label}": ok for st, label, ok, _ in intervals["targets"]})
    if decomposed:
        out(decomposed)
        summary += "\n" + decomposed
    out(between)
    summary += "\n" + between
    return dict(summary=summary, met=met, table=table, targets=targets)


def crease_summary(results: list[dict], out: Callable[[str], None]) -> dict:
    """Dynamic lines: side calls on decisive depth pairs, 'balanced' on equal ones,
    and Spearman between true depth and the crease index per region."""
    from scipy.stats import spearmanr

    every = [ln for r in results for ln in r.get("lines", [])]
    if not every:
        return {}
    # Regions the method refuses (unreadable, cluttered at rest) are counted apart:
    # they are never reported as findings.
    lines = [ln for ln in every if ln["quality"] in ("ok", "low")]
    dec = [ln for ln in lines if ln["kind"] in ("right", "left")]
    bal = [ln for ln in lines if ln["kind"] == "balanced"]
    side = np.mean([ln["dominant"] == ln["kind"] for ln in dec]) if dec else float("nan")
    bal_ok = np.mean([ln["dominant"] == "balanced" for ln in bal]) if bal else float("nan")
    out("\n# Dynamic lines (crease index per side vs the generator's fold depth)")
    rhos = {}
    for region in sorted({ln["region"] for ln in every}):
        t, m = [], []
        for ln in lines:
            if ln["region"] != region:
                continue
            for a, b in zip(ln["truth"], ln["measured"], strict=True):
                if np.isfinite(b):
                    t.append(a)
                    m.append(b)
        rho = float(spearmanr(t, m)[0]) if len(t) > 2 else float("nan")
        rhos[region] = rho
        n_dec = [ln for ln in dec if ln["region"] == region]
        ok = sum(ln["dominant"] == ln["kind"] for ln in n_dec)
        unread = sum(ln["quality"] not in ("ok", "low") for ln in every
                     if ln["region"] == region)
        out(f"  {region:<12} Spearman {rho:5.2f} over {len(t):3d} sides; decisive side "
            f"{ok}/{len(n_dec)}; not read (pairs) {unread}")
    read = {k: v for k, v in rhos.items() if np.isfinite(v)}
    worst = min(read.values()) if read else float("nan")
    line = (f"CREASES (pairs read: {len(lines)}/{len(every)}) decisive-side "
            f"{pct(side).strip()} ({len(dec)} pairs) balanced "
            f"{pct(bal_ok).strip()} ({len(bal)} pairs) Spearman min {worst:.2f} "
            f"({', '.join(f'{k} {v:.2f}' for k, v in rhos.items())})")
    out(line)
    out("TARGETS, dynamic lines:")
    checks = [("crease decisive side >= 95 % (read)", side >= 0.95, pct(side).strip()),
              ("crease Spearman >= 0.9 per region read", worst >= 0.9, f"{worst:.2f}")]
    for label, ok, val in checks:
        out(f"  {'MET   ' if ok else 'MISSED'} {label:<38} {val}")
    return {"line": line, "checks": checks, **{c[0]: bool(c[1]) for c in checks}}
