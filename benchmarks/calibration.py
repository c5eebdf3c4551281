"""The accuracy benchmark's check of the 95 % intervals and the three-state side calls.

:func:`calibration` prints, from the results of :func:`cases.run_case`:

- **calibration**: the share of values whose interval contains the truth, per step
  (each step's primary group; totals for the standard steps' primaries and every group
  of the extended steps) and per condition (standard and extended pooled), with counts;
- the **median interval width** per step, over every case and over the clean ones;
- the **calls**: of the calls not `uncertain`, the share right (the rule applied to the
  truth), and the share of decisive pairs called `uncertain`;
- **between visits**: two recordings of one movement simulated from two cases' values
  of the same step (the second case's error and interval moved onto the first's
  truth): the share called "changed" (``uncertainty.changed``), and with a real 1.5 mm
  decrease added, on clean recordings;
- the dynamic lines' interval coverage is left out: their truth is a fold depth,
  not an index.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from itertools import combinations

import numpy as np
from cases import EXTENDED_STEPS, STEPS
from scoring import dominant, pct1

TARGETS = {
    "cover_lo": 0.90,  # share of intervals containing the truth, per step
    "cover_hi": 0.98,
    "cover_cond": 0.85,  # per condition, where it has >= 20 values
    "cond_min_n": 20,
    "width_clean": 0.80,  # mm, median width per standard step on clean recordings
    "right": 0.98,  # of the calls not uncertain
    "uncertain_std": 0.15,  # of decisive pairs
    "uncertain_ext": 0.25,
    "false_change": 0.05,
    "true_change": 0.90,
}
REAL_CHANGE_MM = 1.5
READ = ("ok", "low")


def _condition(name: str) -> str:
    """The condition a case is pooled under: its standard name, without the protocol
    or the lines ("extended, blur 1.2" and "blur 1.2" are both blur)."""
    for prefix in ("extended, ", "creases, ", "second face, "):
        name = name.removeprefix(prefix)
    return name


def _clean(name: str) -> bool:
    return _condition(name).startswith("clean")


class Tally:
    """Coverage and width over a set of values."""

    def __init__(self) -> None:
        self.inside = 0
        self.n = 0
        self.widths: list[float] = []
        self.no_interval = 0

    def add(self, truth: float, iv: tuple[float, float]) -> None:
        lo, hi = iv
        if not (np.isfinite(lo) and np.isfinite(hi)):
            self.no_interval += 1
            return
        self.n += 1
        self.inside += lo <= truth <= hi
        self.widths.append(hi - lo)

    @property
    def share(self) -> float:
        return self.inside / self.n if self.n else float("nan")

    @property
    def width(self) -> float:
        return float(np.median(self.widths)) if self.widths else float("nan")

    def cell(self) -> str:
        return f"{pct1(self.share):>6} ({self.inside:3d}/{self.n:3d})"


def calibration(results: list[dict], out: Callable[[str], None]) -> dict:
    """Print the tables; return the summary line and the targets as
    (steps, target, met, value) rows, like :func:`scoring.summarise`."""
    per_step: dict[str, Tally] = {}
    per_step_clean: dict[str, Tally] = {}
    per_cond: dict[str, Tally] = {}
    totals = {"standard": Tally(), "extended": Tally()}
    calls = {k: {"sure": 0, "sure_ok": 0, "decisive": 0, "uncertain": 0, "pairs": 0,
                 "unsure_all": 0} for k in totals}
    series: dict[str, list[tuple[str, float, float, tuple[float, float]]]] = {}
    for res in results:
        cond = res["case"].condition
        for s in res["steps"]:
            std = s["step"] in STEPS
            if std and not s["primary"]:
                continue  # the standard figures are the primaries'; extended: every group
            which = "standard" if std else "extended"
            if s["quality"] not in READ:
                continue
            c = calls[which]
            tr, tl = s["truth"]
            truth_call = dominant(tr, tl)
            c["pairs"] += 1
            if s["dominant"] == "uncertain":
                c["unsure_all"] += 1
            elif s["dominant"] in ("right", "left", "balanced"):
                c["sure"] += 1
                c["sure_ok"] += s["dominant"] == truth_call
            if truth_call in ("right", "left"):
                c["decisive"] += 1
                c["uncertain"] += s["dominant"] == "uncertain"
            none = (float("nan"), float("nan"))
            for t, m, iv in ((tr, s["measured"][0], s.get("right_iv", none)),
                             (tl, s["measured"][1], s.get("left_iv", none))):
                if not np.isfinite(m):
                    continue
                key = s["label"] if s["primary"] else f"{s['step']} (secondary)"
                for tally in (per_step.setdefault(key, Tally()), totals[which],
                              per_cond.setdefault(_condition(cond), Tally())):
                    tally.add(t, iv)
                if _clean(cond):
                    per_step_clean.setdefault(key, Tally()).add(t, iv)
                if s["primary"] and not s["moves_truth"]:
                    series.setdefault(s["step"], []).append((cond, t, m, iv))
    out("\n# Intervals: how often the 95 % interval holds the truth")
    out("Per value (each side), ok/low values; the standard steps' primary groups, every "
        "group of the\nextended steps. width = median interval width (mm; clean = clean "
        "recordings only).")
    out(f"{'step':<22} {'contains truth':>17} {'width':>6} {'clean':>6}")
    order = [k for k in (*STEPS, *EXTENDED_STEPS) if k in per_step]
    order += sorted(k for k in per_step if k not in order)
    for k in order:
        clean = per_step_clean.get(k, Tally())
        out(f"{k:<22} {per_step[k].cell():>17} {per_step[k].width:6.2f} {clean.width:6.2f}")
    for k, t in totals.items():
        if t.n:
            out(f"{k + ' (total)':<22} {t.cell():>17} {t.width:6.2f}")
    out(f"\n{'condition (pooled)':<30} {'contains truth':>17} {'width':>6}")
    for k, t in sorted(per_cond.items()):
        out(f"{k:<30} {t.cell():>17} {t.width:6.2f}")
    missing = sum(t.no_interval for t in totals.values())
    if missing:
        out(f"Values read without an interval: {missing}")

    targets: list[tuple[str, str, bool, str]] = []
    for k in order:
        t = per_step[k]
        which = "standard" if k in STEPS else "extended"
        if k.endswith("(secondary)") or not t.n:
            continue
        ok = TARGETS["cover_lo"] <= t.share <= TARGETS["cover_hi"]
        targets.append((which, f"{k}: interval contains the truth 90-98 %", ok, t.cell()))
        if k in STEPS:
            w = per_step_clean.get(k, Tally()).width
            targets.append((which, f"{k}: median width <= 0.8 mm (clean)",
                            bool(w <= TARGETS["width_clean"]), f"{w:.2f} mm"))
    for k, t in sorted(per_cond.items()):
        if t.n >= TARGETS["cond_min_n"]:
            targets.append(("conditions", f"{k}: contains the truth >= 85 %",
                            bool(t.share >= TARGETS["cover_cond"]), t.cell()))

    out("\n# Side calls: dominant / balanced / uncertain")
    line_calls = []
    for which, c in calls.items():
        if not c["pairs"]:
            continue
        right = c["sure_ok"] / c["sure"] if c["sure"] else float("nan")
        unsure = c["uncertain"] / c["decisive"] if c["decisive"] else float("nan")
        out(f"{which}: calls not uncertain right {pct1(right)} ({c['sure_ok']}/{c['sure']});"
            f" decisive pairs uncertain {pct1(unsure)} ({c['uncertain']}/{c['decisive']});"
            f" every pair uncertain {c['unsure_all']}/{c['pairs']}")
        limit = TARGETS["uncertain_std" if which == "standard" else "uncertain_ext"]
        targets.append((which, "calls not uncertain right >= 98 %",
                        bool(right >= TARGETS["right"]), f"{pct1(right)} ({c['sure_ok']}/"
                        f"{c['sure']})"))
        targets.append((which, f"decisive pairs uncertain <= {limit:.0%}",
                        bool(unsure <= limit), f"{pct1(unsure)} ({c['uncertain']}/"
                        f"{c['decisive']})"))
        line_calls.append(f"{which} right {pct1(right)} uncertain {pct1(unsure)}")

    false_n = false_k = true_n = true_k = 0
    from movement.analysis.uncertainty import changed

    for vals in series.values():
        for (ca, ta, ma, ia), (cb, tb, mb, ib) in combinations(vals, 2):
            if not np.isfinite([*ia, *ib]).all():
                continue
            # Visit 2 is the second case's reading moved onto the first case's truth.
            eb = mb - tb
            after = ta + eb
            a_lo, a_hi = after - (mb - ib[0]), after + (ib[1] - mb)
            r = changed(ma, *ia, after, a_lo, a_hi)
            false_n += 1
            false_k += bool(r)
            if _clean(ca) and _clean(cb) and ta >= REAL_CHANGE_MM:
                after2 = after - REAL_CHANGE_MM
                r2 = changed(ma, *ia, after2, a_lo - REAL_CHANGE_MM, a_hi - REAL_CHANGE_MM)
                true_n += 1
                true_k += bool(r2)
    fc = false_k / false_n if false_n else float("nan")
    tc = true_k / true_n if true_n else float("nan")
    out("\n# Between visits (two cases' readings of a step, the second moved onto the first's "
        "truth)")
    out(f"same movement called changed: {pct1(fc)} ({false_k}/{false_n} pairs); "
        f"a real {REAL_CHANGE_MM} mm change on clean recordings called changed: {pct1(tc)} "
        f"({true_k}/{true_n})")
    targets.append(("between visits", "same movement called changed <= 5 %",
                    bool(fc <= TARGETS["false_change"]), f"{pct1(fc)} ({false_k}/{false_n})"))
    targets.append(("between visits", f"a real {REAL_CHANGE_MM} mm change called changed >= 90 %",
                    bool(tc >= TARGETS["true_change"]), f"{pct1(tc)} ({true_k}/{true_n})"))

    out("\n# The method at the generator's own scale (the protocol's reads and reads_spread)")
    out("Per group, values of 1 mm or more read (ok/low): measured / truth with the analysis's\n"
        "mm rescaled by the generator's mm/px, mean and standard deviation. A mean clear of 1\n"
        "is the method's bias; the spread is what the recording's own parts do not show.")
    ratios: dict[str, list[float]] = {}
    small: dict[str, list[float]] = {}
    both: dict[str, list[tuple[float, float]]] = {}
    for res in results:
        k = res.get("scale_ratio", float("nan"))
        if not np.isfinite(k):
            continue
        for s in res["steps"]:
            # Speech's groups too: their values are ranges in mm (their counts are not here).
            if s["quality"] not in READ:
                continue
            for t, m in zip(s["truth"], s["measured"], strict=True):
                if t >= 1.0 and np.isfinite(m):
                    ratios.setdefault(s["label"], []).append(m / k / t)
                elif np.isfinite(m) and np.isfinite(t):
                    small.setdefault(s["label"], []).append(m / k - t)
            t, m = np.asarray(s["truth"], float), np.asarray(s["measured"], float)
            if len(t) == 2 and (t >= 1.0).all() and np.isfinite(m).all():
                both.setdefault(s["label"], []).append(tuple(m / k / t))
    for label in [k for k in per_step if k in ratios] + sorted(
            k for k in ratios if k not in per_step):
        r = np.asarray(ratios[label])
        sd = float(np.std(r, ddof=1)) if len(r) > 1 else float("nan")
        out(f"{label:<28} n {len(r):3d}  reads {r.mean():.3f}  spread {sd:.3f}")
    out("Per group, consults with both sides of 1 mm or more: the correlation of the two\n"
        "sides' measured / truth, the protocol's reads_shared (negative: 0).")
    for label, pairs in sorted(both.items()):
        a = np.asarray(pairs)
        if len(a) >= 5:
            out(f"{label:<28} n {len(a):3d}  shared {float(np.corrcoef(a.T)[0, 1]):+.2f}")
    out("Per group, values under 1 mm: the root-mean-square error (mm, rescaled the same\n"
        "way), the protocol's reads_floor_mm: what a share of a small value does not reach.")
    for label, e in sorted(small.items()):
        a = np.asarray(e)
        out(f"{label:<28} n {len(a):3d}  floor {float(np.sqrt(np.mean(a * a))):.3f} mm")

    interval_scales(results, out)

    out("TARGETS, intervals and calls:")
    for steps, label, ok, val in targets:
        out(f"  {'MET   ' if ok else 'MISSED'} {steps + ': ' + label:<62} {val}")
    cover = ", ".join(f"{k} {pct1(t.share)} ({t.n})" for k, t in totals.items() if t.n)
    line = (f"INTERVALS contain the truth: {cover}; calls: " + "; ".join(line_calls)
            + f"; between visits changed {pct1(fc)} (same), {pct1(tc)} (1.5 mm)")
    out(line)
    return {"line": line, "targets": targets}


@cache
def _protocol(name: str) -> object:
    from movement.protocol import load_protocol

    return load_protocol(name)


def _group_of(res: dict, s: dict) -> object:
    """The protocol's muscle group behind one of a case's values."""
    step = _protocol(res["case"].protocol).step(s["step"])  # type: ignore[attr-defined]
    if "/" in s["label"]:
        name = s["label"].split("/", 1)[1]
        return next(g for g in step.groups if g.name == name)
    return next(g for g in step.groups if g.primary)


def needed_scale(truth: float, value: float, iv: tuple[float, float], reads: float,
                 scale: float) -> float:
    """The smallest ``interval_scale`` whose interval around ``value`` holds ``truth``
    (0 when any does), from the interval ``iv`` made with ``scale``: the half-width at
    scale 1 is what the interval reaches beyond the value and the value it implies
    (``value / reads``), over ``scale``."""
    near, far = sorted((value, value / reads if reads > 0 else value))
    half = (near - iv[0]) / scale
    if not (np.isfinite(half) and half > 0):
        return float("nan")
    if truth > far:
        return (truth - far) / half
    if truth < near:
        return (near - truth) / half
    return 0.0


def _scale_for_95(need: np.ndarray) -> float:
    """The smallest scale (rounded up to 0.01) holding 95 % of values that need ``need``:
    the ceil(0.95 n)-th smallest (rounded down it would hold fewer)."""
    a = np.sort(need)
    return float(np.ceil(a[int(np.ceil(0.95 * len(a))) - 1] * 100) / 100)


def interval_scales(results: list[dict], out: Callable[[str], None]) -> dict[str, float]:
    """Per group, the ``interval_scale`` under which 95 % of its values' intervals hold
    the truth, beside the protocol's: the calibration of the intervals' width. And how
    well such a scale carries to other consults: fitted on every other case and checked
    on the rest (both ways), the share of the rest's values it holds."""
    need: dict[str, list[tuple[int, float]]] = {}
    current: dict[str, float] = {}
    none = (float("nan"), float("nan"))
    for i, res in enumerate(results):
        for s in res["steps"]:
            if s["quality"] not in READ:
                continue
            g = _group_of(res, s)
            current[s["label"]] = g.interval_scale  # type: ignore[attr-defined]
            for t, m, iv in zip(s["truth"], s["measured"],
                                (s.get("right_iv", none), s.get("left_iv", none)), strict=True):
                if np.isfinite([t, m, *iv]).all():
                    f = needed_scale(t, m, iv, g.reads, g.interval_scale)  # type: ignore
                    if np.isfinite(f):
                        need.setdefault(s["label"], []).append((i % 2, f))
    out("Per group, the interval_scale that holds 95 % of its values (the ceil(0.95 n)-th\n"
        "smallest scale each value's interval needs to hold its truth), the protocol's, and\n"
        "the share of values held by the scale fitted on the other half of the cases\n"
        "(every other case; both ways).")
    found = {}
    for label, pairs in sorted(need.items()):
        half = np.array([h for h, _ in pairs])
        a = np.array([f for _, f in pairs])
        found[label] = _scale_for_95(a)
        held = [a[half == h] <= _scale_for_95(a[half != h]) for h in (0, 1)
                if (half == h).any() and (half != h).any()]
        cross = f"{np.concatenate(held).mean():6.1%}" if held else "   n/a"
        out(f"{label:<28} n {len(a):3d}  interval_scale {found[label]:.2f}"
            f"  (protocol {current[label]:.2f})  other half held {cross}")
    return found
