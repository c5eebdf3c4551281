"""Clinic commands: patients, sessions, treatments, comparisons, export and import.

The commands are thin, like the rest of the CLI: parse, call
:mod:`movement.clinic.store` / :mod:`movement.clinic.compare` /
:mod:`movement.clinic.transfer`, print. They are exported as
:data:`COMMANDS` so ``movement.cli`` adds them to the ``movement`` group
(``for c in COMMANDS: main.add_command(c)``) without this module importing
``movement.cli`` (which would be circular).

Every command takes ``--store PATH`` (default ``$MOVEMENT_STORE`` or
``./reports``). Errors are one line on stderr: exit code 2 for invalid input
(ID, date, side, units, plan file), 6 for an output folder that cannot be
written or holds other files, 7 for the store itself (missing, unknown
patient, damaged, newer schema).
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from movement.clinic import store as st
from movement.clinic import transfer

_F = TypeVar("_F", bound=Callable[..., Any])


class ClinicError(click.ClickException):
    """A user-facing error of a clinic command: one line on stderr, a documented exit code."""

    def __init__(self, message: str, code: int) -> None:
        # One line, whatever a path or an error text contained.
        super().__init__(" ".join(str(message).split()))
        self.exit_code = code

    def show(self, file: Any = None) -> None:
        click.echo(f"movement: error: {self.format_message()}", err=True)


def _errors(fn: _F) -> _F:
    """Turn library errors into one-line :class:`ClinicError`; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except st.StoreError as exc:
            raise ClinicError(str(exc), exc.exit_code) from None
        except click.ClickException:
            raise
        except KeyboardInterrupt:
            raise ClinicError("interrupted", 130) from None
        except Exception as exc:
            # MOVEMENT_DEBUG=1 shows the traceback, as for analyze.
            if os.environ.get("MOVEMENT_DEBUG"):
                raise
            raise ClinicError(f"internal error ({type(exc).__name__}: {exc})", 1) from None

    return wrapper  # type: ignore[return-value]


def _store_option(fn: _F) -> _F:
    return click.option(
        "--store",
        "store",
        type=click.Path(file_okay=False),
        metavar="PATH",
        default=None,
        help=f"Clinic store folder (default: ${st.ENV_STORE} or ./{st.DEFAULT_STORE}).",
    )(fn)


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: set[int]) -> None:
    """Aligned plain-text columns: readable in a terminal, greppable, no dependency."""
    text = [[("—" if v is None or v == "" else str(v)) for v in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in text]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    click.echo(line(headers))
    click.echo(line(["-" * w for w in widths]))
    for r in text:
        click.echo(line(r))


def _refresh_comparison(store: str | None, patient: str) -> Path | None:
    """Keep the patient's comparison current; a failure here must not hide that data was saved."""
    from movement.clinic.compare import update_comparison

    try:
        return update_comparison(store, patient)
    except st.StoreError as exc:
        click.echo(f"movement: warning: comparison not updated: {exc}", err=True)
        return None


# --------------------------------------------------------------------------- commands


@click.command("patients")
@_store_option
@_errors
def patients(store: str | None) -> None:
    """List the patients in the clinic store, with their sessions and treatments."""
    rows = st.list_patients(store)
    if not rows:
        click.echo(f"no patients in the store at {st.resolve_store(store)}")
        return
    _table(
        ["patient", "sessions", "first", "last", "treatments", "last treatment"],
        [
            [p.patient, p.sessions, p.first_date, p.last_date, p.treatments, p.last_treatment]
            for p in rows
        ],
        right={1, 4},
    )


@click.command("sessions")
@click.argument("patient")
@_store_option
@_errors
def sessions(patient: str, store: str | None) -> None:
    """List a PATIENT's sessions (and treatments), with the days since the last treatment."""
    rows = st.list_sessions(store, patient)
    if rows:
        _table(
            ["id", "date", "label", "protocol", "days since treatment", "report", "measurement"],
            [
                [s.id, s.date, s.label, s.protocol, s.days_since_treatment, s.report_path,
                 s.measurement_version or "older"]
                for s in rows
            ],
            right={0, 4},
        )
        from movement.clinic.compare import versions_note

        note = versions_note(patient, rows)
        if note:
            click.echo(f"movement: note: {note}", err=True)
    else:
        click.echo(f"no sessions for '{patient}'")
    tx = st.list_treatments(store, patient)
    if tx:
        click.echo("")
        _table(
            ["treated", "product", "muscle group", "side", "units", "point", "lot", "notes"],
            [[t.date, t.product, t.muscle_group, t.side, f"{t.units:g}", t.point, t.lot, t.notes]
             for t in tx],  # fmt: skip
            right={4},
        )
    link = st.patient_dir(store, patient) / st.COMPARISON_FILE
    if len(rows) >= 2 and link.exists():
        click.echo(f"\ncomparison: {link}")


@click.command("treat")
@click.argument("patient")
@click.option("--date", default=None, help="Treatment date YYYY-MM-DD (default: today).")
@click.option(
    "--file",
    "plan",
    type=click.Path(dir_okay=False),
    default=None,
    help="CSV plan: product, muscle_group, side, units[, point, lot, notes].",
)
@click.option("--product", default=None, help="Product, e.g. Botox (single row).")
@click.option("--muscle-group", default=None, help="Muscle group, e.g. frontalis.")
@click.option("--side", default=None, help="right, left or midline (patient's side).")
@click.option("--units", default=None, help="Units injected (>= 0).")
@click.option("--point", default="", help="Injection point (optional).")
@click.option("--lot", default="", help="Product lot number (optional).")
@click.option("--notes", default="", help="Free notes (optional).")
@_store_option
@_errors
def treat(
    patient: str,
    date: str | None,
    plan: str | None,
    product: str | None,
    muscle_group: str | None,
    side: str | None,
    units: str | None,
    point: str,
    lot: str,
    notes: str,
    store: str | None,
) -> None:
    """Record a PATIENT's treatment: a plan file (--file) or one row from the options."""
    date = st.check_date(date or _dt.date.today().isoformat())
    single = {"--product": product, "--muscle-group": muscle_group, "--side": side,
              "--units": units}  # fmt: skip
    extras = {"--point": point, "--lot": lot, "--notes": notes}
    if plan:
        given = [k for k, v in {**single, **extras}.items() if v]
        if given:
            raise ClinicError(f"give either --file or the single-row options ({given[0]})", 2)
        rows = st.read_plan(plan)
    else:
        missing = [k for k, v in single.items() if v is None]
        if missing:
            raise ClinicError(
                f"missing {', '.join(missing)} (or give a plan with --file plan.csv)", 2
            )
        rows = [st.treatment_row(product, muscle_group, side, units, point, lot, notes)]
    st.check_patient(patient)
    # Groups the patient's sessions measured: a treatment of another group is
    # kept, but it cannot appear next to any measurement, so say so.
    measured: set[str] = set()
    try:
        hist = st.history(store, patient)
        measured = {r["muscle_group"] for rs in hist.asymmetry.values() for r in rs}
    except st.StoreError:
        pass  # a new patient or a new store: nothing to check against yet
    st.record_treatment(store, patient, date, rows)
    groups = list(dict.fromkeys(r.muscle_group for r in rows))
    click.echo(f"recorded {len(rows)} treatment row(s) for '{patient}' on {date}:")
    for g in groups:
        sub = [r for r in rows if r.muscle_group == g]
        products = ", ".join(dict.fromkeys(r.product for r in sub))
        total = {s: sum(r.units for r in sub if r.side == s) for s in st.SIDES}
        what = " / ".join(f"{u:g} U {s}" for s, u in total.items() if any(
            r.side == s for r in sub))  # fmt: skip
        click.echo(f"  {g}: {what} ({products})")
    unknown = [g for g in groups if measured and g not in measured]
    if unknown:
        click.echo(
            f"movement: note: {', '.join(unknown)} is not among the muscle groups measured for "
            f"'{patient}' ({', '.join(sorted(measured))}); it is recorded but not compared",
            err=True,
        )
    link = _refresh_comparison(store, patient)
    if link:
        click.echo(f"comparison updated: {link}")


@click.command("compare")
@click.argument("patient")
@click.option(
    "--sessions",
    "chosen",
    default=None,
    help="Sessions to compare: ids, labels or dates, comma-separated (default: all).",
)
@click.option("--baseline", default=None, help="Baseline session (default: the earliest).")
@click.option(
    "--out",
    "out",
    type=click.Path(),
    required=True,
    help="Folder for comparison.html and comparison.csv.",
)
@_store_option
@_errors
def compare(
    patient: str, chosen: str | None, baseline: str | None, out: str, store: str | None
) -> None:
    """Compare a PATIENT's sessions: per muscle group and side, change from the baseline."""
    from movement.clinic.compare import compare as run

    names = chosen.split(",") if chosen else None
    cmp = run(store, patient, out, names, baseline)
    click.echo(f"{len(cmp.sessions)} sessions, baseline {cmp.baseline.date} "
               f"({cmp.baseline.label or '#' + str(cmp.baseline.id)})")  # fmt: skip
    for g in cmp.groups:
        if g.primary:
            click.echo(f"  {g.statement}")
    if cmp.versions_note:
        click.echo(f"movement: warning: {cmp.versions_note}", err=True)
    click.echo(f"Open {Path(out) / st.COMPARISON_FILE}")


@click.command("export")
@click.argument("patient")
@click.option(
    "--out", "out", type=click.Path(), required=True, help="CSV file to write (- = stdout)."
)
@_store_option
@_errors
def export(patient: str, out: str, store: str | None) -> None:
    """Export all of a PATIENT's sessions and treatments as one tidy long CSV."""
    n = transfer.export_csv(store, patient, out)
    if out != "-":
        click.echo(f"wrote {n} rows to {out}")


@click.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@_store_option
@_errors
def import_(file: str, store: str | None) -> None:
    """Re-create the sessions and treatments of an export FILE in the store (idempotent)."""
    s = transfer.import_csv(store, file)
    click.echo(
        f"imported {file}: sessions {s.sessions_added} added, {s.sessions_updated} updated, "
        f"{s.sessions_unchanged} unchanged; treatments {s.treatments_added} added, "
        f"{s.treatments_updated} updated, {s.treatments_unchanged} unchanged "
        f"({len(s.patients)} patient(s))"
    )
    if s.sessions_added or s.sessions_updated or s.treatments_added or s.treatments_updated:
        for p in s.patients:
            _refresh_comparison(store, p)


COMMANDS: list[click.Command] = [patients, sessions, treat, compare, export, import_]
