"""The ``movement`` command line. Commands are thin: parse, call the library, print.

Exit codes: 0 success; 2 usage error (including an invalid patient ID); 3
unreadable video (missing, not a video, empty, truncated, unsupported codec); 4
no face in the video; 5 protocol or cues file invalid; 6 output folder
unwritable or holding another session; 7 clinic store error; 8 (a --batch
video) the worker analysing it died twice; 9 --cluster unavailable (Dask not
installed, or the scheduler unreachable); 130 interrupted; 1 anything unexpected.
A --batch run exits with the highest code among its videos.
"""

from __future__ import annotations

import datetime as _dt
import os
import signal
import sys
import time
from pathlib import Path
from typing import NoReturn

import click

from movement import __version__

_INSTALL_HINT = "pip install 'movement-face[cluster]'"
VIDEO_SUFFIXES = {".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm"}


class Failure(click.ClickException):
    """A user-facing error: one line on stderr, a documented exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.exit_code = code

    def show(self, file=None) -> None:  # noqa: ANN001 - click's signature
        click.echo(f"movement: error: {self.format_message()}", err=True)


NATIVE_LOGS_ENV = "MOVEMENT_NATIVE_LOGS"
"""Set to 1 to keep MediaPipe's and TensorFlow Lite's own log lines (debugging)."""


def _quiet_native_logs() -> None:
    """Keep native libraries' log lines off the terminal, and Python's stderr on it.

    MediaPipe and TensorFlow Lite write their C++ logs straight to file
    descriptor 2 (six lines on every run, before any error of ours), which no
    environment variable of theirs turns off in this version. Python's own
    stderr (progress, the one-line errors, warnings) moves to a copy of the
    descriptor; descriptor 2 itself goes to the null device.
    """
    if os.environ.get(NATIVE_LOGS_ENV) == "1":
        return
    try:
        if sys.stderr.fileno() != 2:
            return
    except (AttributeError, OSError, ValueError):
        return  # not the process's stderr (e.g. a test runner's capture)
    sys.stderr.flush()
    keep = os.dup(2)
    sys.stderr = os.fdopen(keep, "w", buffering=1, encoding=sys.stderr.encoding,
                           errors="backslashreplace")
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="movement")
def main() -> None:
    """Measure facial muscle movement per side, in millimetres, from a consult video."""
    _quiet_native_logs()


class _Progress:
    """Frames done, frames/s and time left on stderr; silent when quiet."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.quiet = max(total, 1), quiet
        self.done = 0
        self.t0 = time.monotonic()
        self.last = 0.0

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.quiet or now - self.last < 0.5:
            return
        self.last = now
        fps = self.done / max(now - self.t0, 1e-6)
        left = max(self.total - self.done, 0) / max(fps, 1e-6)
        pct = min(self.done / self.total, 1.0)
        bar = "#" * int(pct * 30)
        click.echo(
            f"\r  tracking [{bar:<30}] {self.done}/{self.total} frames  {fps:5.1f} fps  "
            f"{left:4.0f} s left",
            err=True,
            nl=False,
        )

    def close(self) -> None:
        if not self.quiet and self.done:
            click.echo("", err=True)


def _clip_list(
    videos: tuple[str, ...], steps: str | None, batch: bool
) -> tuple[list[Path], list[str] | None]:
    paths = [Path(v) for v in videos]
    if len(paths) == 1 and paths[0].is_dir():
        folder = paths[0]
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if not paths:
            raise Failure(f"{folder}: no video files in the folder", 3)
        if steps is None and not batch:
            # One clip per step, named after the step (frown.mp4, raise.mp4, ...).
            return paths, [p.stem for p in paths]
    if batch:
        return paths, None
    names = [s.strip() for s in steps.split(",")] if steps else None
    if names is not None and len(names) != len(paths):
        raise Failure(f"--steps names {len(names)} steps for {len(paths)} videos", 2)
    if names is None and len(paths) > 1:
        raise Failure("several videos need --steps (one step per clip) or --batch", 2)
    return paths, names


def _valid_date(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    if value is None:
        return _dt.date.today().isoformat()
    try:
        return _dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise click.BadParameter("use YYYY-MM-DD") from None


@main.command()
@click.argument("videos", nargs=-1, required=True)
@click.option(
    "--out",
    "out",
    type=click.Path(),
    default=None,
    help="Session folder to write (default: reports/<video name>).",
)
@click.option(
    "--protocol",
    default="standard",
    show_default=True,
    help="Protocol name (see `movement protocols`) or path to a .toml file.",
)
@click.option("--mirrored", is_flag=True, help="Selfie video: the image is mirrored.")
@click.option(
    "--cues",
    type=click.Path(dir_okay=False),
    default=None,
    help="CSV step,start_s,end_s with manual step times.",
)
@click.option(
    "--steps", default=None, help="With one clip per step: the step of each clip, e.g. frown,raise."
)
@click.option(
    "--face",
    type=click.Choice(["largest", "left", "right"]),
    default="largest",
    show_default=True,
    help="Which face to measure when several are in view.",
)
@click.option("--patient", default="", help="Patient ID (free text).")
@click.option("--label", default="", help='Session label, e.g. "baseline", "2-week".')
@click.option("--date", callback=_valid_date, default=None, help="Session date YYYY-MM-DD.")
@click.option("--no-images", is_flag=True, help="Report without face images (for sharing).")
@click.option("--force", is_flag=True, help="Replace an output folder holding another session.")
@click.option("--batch", is_flag=True,
              help="Each video (each video in the folder, or each row of a manifest CSV: "
              "video,patient,label,date[,protocol,mirrored,cues]) is its own consult, written "
              "to OUT/<video name>; a rerun skips what is done; OUT/batch-summary.csv lists "
              "every outcome.")
@click.option("--jobs", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Videos analysed at once with --batch (one process each).")
@click.option("--cluster", default=None, metavar="local:N|tls://HOST:PORT",
              help="With --batch: analyse on Dask workers, N local processes or a remote "
              f"scheduler (needs the extra: {_INSTALL_HINT}).")
@click.option("--tls-ca", type=click.Path(dir_okay=False), default=None,
              help="CA certificate of a tls:// scheduler.")
@click.option("--tls-cert", type=click.Path(dir_okay=False), default=None,
              help="This client's certificate for a tls:// scheduler.")
@click.option("--tls-key", type=click.Path(dir_okay=False), default=None,
              help="This client's private key for a tls:// scheduler.")
@click.option("--allow-unencrypted", is_flag=True,
              help="Allow a plain tcp:// scheduler on another machine (patient data "
              "crosses the network unencrypted).")
@click.option("--retry-failed", is_flag=True,
              help="With --batch: analyse again the videos that failed in an earlier run.")
@click.option("--store", "store_dir", type=click.Path(file_okay=False), default=None,
              help="Clinic store folder for --patient (default: $MOVEMENT_STORE or ./reports).")
@click.option("--no-pose-correction", is_flag=True,
              help="Report the image-plane reading: no face-on correction for head pose.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
def analyze(
    videos: tuple[str, ...],
    out: str | None,
    protocol: str,
    mirrored: bool,
    cues: str | None,
    steps: str | None,
    face: str,
    patient: str,
    label: str,
    date: str,
    no_images: bool,
    force: bool,
    batch: bool,
    jobs: int,
    cluster: str | None,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    allow_unencrypted: bool,
    retry_failed: bool,
    store_dir: str | None,
    no_pose_correction: bool,
    quiet: bool,
) -> None:
    """Analyse a consult VIDEO (or one clip per step) and write a session folder.

    With --batch: each video of a folder, or each row of a manifest CSV, is its own consult.
    """
    from movement import consult
    from movement.analysis import pose
    from movement.analysis.pipeline import Options

    pose.ENABLED = not no_pose_correction

    # `kill` (SIGTERM) unwinds like Ctrl-C, so temporary folders are removed and
    # nothing half-written is left behind.
    signal.signal(signal.SIGTERM, _interrupt)
    from movement.analysis.steps import read_cues
    from movement.protocol import load_protocol

    try:
        if patient:
            from movement.clinic.store import check_patient

            check_patient(patient)
        if not batch and (cluster or retry_failed):
            raise Failure("--cluster and --retry-failed go with --batch", 2)
        if batch and steps:
            raise Failure("--steps does not go with --batch (each video is a whole consult)", 2)
        if batch:
            out_root = Path(out) if out else Path("reports")
            # The command line's protocol and cues are checked now, not once per video.
            proto = load_protocol(protocol)
            if cues:
                read_cues(cues, proto)
            defaults = dict(patient=patient, label=label, date=date, protocol=protocol,
                            mirrored=mirrored, cues=cues, face=face)
            cl = dict(spec=cluster, tls=(tls_ca, tls_cert, tls_key),
                      allow_unencrypted=allow_unencrypted)
            _batch(videos, out_root, defaults, not no_images, force, jobs, cl, retry_failed,
                   quiet, Path(store_dir) if store_dir else None)
            return
        proto = load_protocol(protocol)
        paths, names = _clip_list(videos, steps, batch)
        if names:
            unknown = [n for n in names if n not in {s.name for s in proto.steps}]
            if unknown:
                raise Failure(f"protocol '{proto.name}' has no step(s) {', '.join(unknown)}", 5)
        cue_times = read_cues(cues, proto) if cues else None
        opts = Options(proto, mirrored, cue_times, face, patient, label, date)
        out_dir = Path(out) if out else Path("reports") / paths[0].stem
        total = sum(_frame_count(p) for p in paths)
        prog = _Progress(total, quiet or not sys.stderr.isatty())
        session = consult.analyze_to_folder(
            paths, names, out_dir, opts, not no_images, force, progress=prog,
            store_dir=Path(store_dir) if store_dir else None,
        )
        prog.close()
    except click.ClickException:
        raise
    except BaseException as exc:
        _fail(exc, "nothing was written")
    _summary(session, out_dir, quiet)


def _fail(exc: BaseException, kept: str) -> NoReturn:
    """One line for the clinician, never a traceback (MOVEMENT_DEBUG=1 shows it): ``exc``
    as its exit code, ``kept`` saying what is left as it was."""
    if isinstance(exc, KeyboardInterrupt):
        raise Failure(f"interrupted; {kept}", 130) from None
    if not isinstance(exc, Exception):
        raise exc
    from movement import consult  # imported late: the command line starts fast

    code = consult.exit_code(exc)
    if code is not None:
        raise Failure(" ".join(str(exc).split()), code) from None
    if os.environ.get("MOVEMENT_DEBUG"):
        raise exc
    raise Failure(f"internal error ({type(exc).__name__}: {exc}); {kept}", 1) from None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _frame_count(path: Path) -> int:
    from movement.analysis.video import probe

    return probe(path).frame_count


def _batch(
    videos: tuple[str, ...], out_root: Path, defaults: dict, images: bool, force: bool,
    jobs: int, cluster: dict, retry_failed: bool, quiet: bool, store_dir: Path | None,
) -> None:
    """``--batch``: each video its own consult, on a process pool or Dask workers."""
    from movement import batch as b

    try:
        if cluster["spec"]:
            b.require_dask()  # before anything else: the one line on how to install it
            spec = b.parse_cluster(cluster["spec"], b.Tls(*cluster["tls"]),
                                   cluster["allow_unencrypted"])
        elif any(cluster["tls"]):
            raise Failure("--tls-ca/--tls-cert/--tls-key go with --cluster tls://...", 2)
        base = b.BatchItem(Path(""), Path(""), **defaults)
        if len(videos) == 1 and videos[0].lower().endswith(".csv"):
            items = b.read_manifest(Path(videos[0]), out_root, base)
        else:
            paths, _ = _clip_list(videos, None, True)
            items = b.folder_items(paths, out_root, base)
        executor = b.open_dask(spec, lazy=True) if cluster["spec"] else b.PoolExecutor(jobs)
    except b.BatchError as exc:
        raise Failure(str(exc), exc.exit_code) from None
    progress = b.BatchProgress(len(items), not quiet and sys.stderr.isatty())

    def show(o: b.Outcome) -> None:
        progress.clear()
        name = Path(o.video).name
        if o.status == "ok":
            what = "recorded" if o.action == "recorded" else (
                f"{o.steps_measured}/{o.steps_total} steps measured")
            click.echo(f"ok      {name} -> {o.out}/ ({what})")
        else:
            click.echo(f"movement: error: {name}: {o.error}", err=True)

    try:
        report = b.run_batch(items, out_root, executor, images, force, store_dir, retry_failed,
                             progress, on_outcome=show)
    except b.BatchError as exc:
        raise Failure(str(exc), exc.exit_code) from None
    except KeyboardInterrupt:
        raise Failure("interrupted; the videos finished are kept (run again to resume)",
                      130) from None
    finally:
        executor.close()
    failed = report.failed
    for o in failed:
        if o.action == "skipped":
            click.echo(f"movement: error: {Path(o.video).name}: {o.error} (an earlier run; "
                       "--retry-failed analyses it again)", err=True)
    skipped = sum(o.action == "skipped" for o in report.outcomes)
    if not quiet:
        ok = len(report.outcomes) - len(failed)
        click.echo(f"{ok} of {len(report.outcomes)} videos ok"
                   + (f" ({skipped} unchanged since an earlier run)" if skipped else "")
                   + f"; summary: {report.summary}")
    if failed:
        raise SystemExit(report.exit_code)


def _summary(session, out_dir: Path, quiet: bool) -> None:  # noqa: ANN001
    if quiet:
        click.echo(str(out_dir / "report.html"))
        return
    a = session.asymmetry
    click.echo(f"Session written to {out_dir}/")
    for _, r in a[a["primary"]].iterrows():
        if r["quality"] == "missing":
            click.echo(f"  {r['step']:<7} {r['muscle_group']:<20} missing (step not found)")
            continue
        click.echo(
            f"  {r['step']:<7} {r['muscle_group']:<20} R {r['right_mm']:5.2f} mm  "
            f"L {r['left_mm']:5.2f} mm  {r['dominant_side']:<8}"
            + (f" [{r['quality']}: {r['reason']}]" if r["quality"] != "ok" else "")
        )
    for w in session.warnings:
        click.echo(f"  warning: {w}", err=True)
    click.echo(f"Open {out_dir / 'report.html'}")


@main.command()
@click.argument("name", required=False)
def protocols(name: str | None) -> None:
    """List the protocols, or show one protocol's steps and measurements."""
    from movement.protocol import ProtocolError, available_protocols, load_protocol

    if name is None:
        for n, p in available_protocols().items():
            try:
                proto = load_protocol(p)
                click.echo(f"{n:<12} {len(proto.steps)} steps  {proto.title}  ({p})")
            except ProtocolError as exc:
                click.echo(f"{n:<12} INVALID: {exc}")
        return
    try:
        proto = load_protocol(name)
    except ProtocolError as exc:
        raise Failure(str(exc), 5) from None
    click.echo(f"{proto.title} ({proto.name}, version {proto.version})")
    click.echo(f"  file: {proto.path}")
    t = proto.thresholds
    click.echo(
        f"  dominant side: difference >= {t.min_diff_mm:g} mm "
        f"and >= {t.min_ratio:.0%} of the larger"
    )
    for i, s in enumerate(proto.steps, 1):
        mode = " [repeated movement: dynamic range and count]" if s.mode == "range" else ""
        click.echo(f"\n  {i}. {s.name} (~{s.duration_s:g} s): {s.instruction}{mode}")
        for g in s.groups:
            star = "*" if g.primary else " "
            sensor = g.sensor + ("+affine" if g.affine else "")
            click.echo(
                f"     {star} {g.name:<22} {g.measure:<16} {g.kind:<9} sensor={sensor:<9} "
                f"R{list(g.right)} L{list(g.left)}"
            )
            if g.reliability:
                click.echo(f"       reliability: {g.reliability}")
        for c in s.creases:
            click.echo(
                f"     ~ {c.name + ' lines':<22} {'crease':<16} {c.orientation_deg:g} deg, "
                f"{c.width_mm:g} mm folds, R{list(c.right)} L{list(c.left)}"
            )
    if proto.rest_measures:
        click.echo("\n  At rest: " + ", ".join(f"{m.name} ({m.kind})" for m in proto.rest_measures))
    for p in proto.pairs:
        click.echo(f"  Pair: {p.name}: {':'.join(p.first)} with {':'.join(p.second)}")
    click.echo("\n  * primary measurement of the step   ~ dynamic lines (crease index, not mm)")


@main.command()
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--sample", is_flag=True, help="The bundled sample's settings and amplitudes.")
@click.option(
    "--amplitudes",
    default=None,
    help="step=right:left mm pairs, e.g. raise=4.2:2.3,smile=6:4 (others 0).",
)
@click.option(
    "--protocol", "protocol_name", type=click.Choice(["standard", "extended"]),
    default="standard", show_default=True, help="The protocol the video performs.",
)
@click.option(
    "--creases", default=None,
    help="step=right:left fold depths (0-0.6, e.g. 0.25 = 25 % darker), e.g. raise=0.3:0.1.",
)
@click.option("--mirrored", is_flag=True, help="Write a mirrored (selfie) video.")
@click.option("--roll", "roll_deg", type=float, default=0.0, help="Head roll amplitude, degrees.")
@click.option("--shift", "shift_px", type=float, default=0.0, help="Head drift amplitude, px.")
@click.option("--zoom", type=float, default=0.0, help="Relative zoom amplitude, e.g. 0.03.")
@click.option("--noise", type=float, default=0.0, help="Gaussian pixel noise sigma.")
@click.option("--size", default="960x540", show_default=True, help="Frame size WxH.")
@click.option("--seed", type=int, default=0)
@click.option(
    "--face", default=None, metavar="PHOTO",
    help="Warp this face instead of the astronaut: an image file, or VIDEO@FRAME "
    "(a frame of a video). A frontal face with open eyes.",
)
def synth(
    out: str,
    sample: bool,
    amplitudes: str | None,
    protocol_name: str,
    creases: str | None,
    mirrored: bool,
    roll_deg: float,
    shift_px: float,
    zoom: float,
    noise: float,
    size: str,
    seed: int,
    face: str | None,
) -> None:
    """Write a synthetic consult video with known per-side movement (and its truth)."""
    from movement import synth as sy

    if face is not None:
        if sample:
            raise Failure("--face: the sample is the astronaut; leave out --sample", 2)
        try:
            sy.use_face(face)
        except ValueError as exc:
            raise Failure(f"--face: {exc}", 2) from None

    extended = protocol_name == "extended"
    if sample:
        spec = sy.extended_sample_spec() if extended else sy.sample_spec()
        sy.make_video(spec, Path(out))
        click.echo(f"{out} (+ truth json)")
        return
    amps = {k: v for k, v in sy.EXTENDED_SAMPLE_AMPLITUDES.items()
            if extended or k in sy.SAMPLE_AMPLITUDES}
    if amplitudes:
        amps = {k: (0.0, 0.0) for k in amps}
        amps.update(_pairs(amplitudes, "--amplitudes", "step=right:left,..."))
    folds = _pairs(creases, "--creases", "step=right:left depths,...") if creases else None
    try:
        w, h = (int(x) for x in size.lower().split("x"))
    except ValueError:
        raise Failure("--size: use WxH, e.g. 960x540", 2) from None
    try:
        spec = sy.standard_spec(
            amps, creases=folds, protocol=protocol_name, frame_size=(w, h), roll_deg=roll_deg,
            shift_px=shift_px, zoom=zoom, noise_sigma=noise, mirrored=mirrored, seed=seed,
            face=face or sy.ASTRONAUT,
        )
    except ValueError as exc:
        raise Failure(str(exc), 2) from None
    sy.make_video(spec, Path(out))
    click.echo(f"{out} (+ truth json)")


def _pairs(text: str, option: str, form: str) -> dict[str, tuple[float, float]]:
    out = {}
    try:
        for item in text.split(","):
            k, v = item.split("=")
            r, l_ = v.split(":")
            out[k.strip()] = (float(r), float(l_))
    except ValueError:
        raise Failure(f"{option}: use {form}", 2) from None
    return out


@main.command()
@click.option("--patient", default="", help="Patient ID (free text).")
@click.option("--label", default="", help='Session label, e.g. "baseline", "2-week".')
@click.option("--date", callback=_valid_date, default=None, help="Session date YYYY-MM-DD.")
@click.option("--protocol", default="standard", show_default=True,
              help="Protocol name (see `movement protocols`) or path to a .toml file.")
@click.option("--steps", default=None,
              help="Record only these steps of the protocol, e.g. frown,raise.")
@click.option("--out", type=click.Path(), default=None,
              help="Session folder to write (default: reports/recording-<date>-<time>).")
@click.option("--store", "store_dir", type=click.Path(file_okay=False), default=None,
              help="Clinic store folder for --patient (default: $MOVEMENT_STORE or ./reports).")
@click.option("--no-open", is_flag=True,
              help="Do not open a browser; print the page's address as the first line.")
@click.option("--auto", is_flag=True,
              help="The page starts once the checks pass and ends with the analysis (kiosk).")
@click.option("--silent", is_flag=True, help="Do not speak the instructions.")
def record(
    patient: str, label: str, date: str, protocol: str, steps: str | None, out: str | None,
    store_dir: str | None, no_open: bool, auto: bool, silent: bool,
) -> None:
    """Record a consult in the browser: camera check, the protocol step by step, analysis.

    The page is served on this machine only (127.0.0.1); the video never leaves it.
    """
    from movement.protocol import ProtocolError, load_protocol
    from movement.record.server import Config, serve

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if patient:
            from movement.clinic.store import check_patient

            check_patient(patient)
        proto = load_protocol(protocol)
        if steps:
            proto = proto.subset([s.strip() for s in steps.split(",") if s.strip()])
    except ProtocolError as exc:
        raise Failure(str(exc), 5) from None
    except ValueError as exc:
        raise Failure(str(exc), 2) from None
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = Path(out) if out else Path("reports") / f"recording-{stamp}"
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        # A recording never replaces a stored session.
        raise Failure(f"{out_dir}: exists and is not empty; choose another --out", 6)
    cfg = Config(proto, out_dir, patient, label, date,
                 Path(store_dir) if store_dir else None, auto, not silent)

    def on_url(url: str) -> None:
        if no_open:
            click.echo(url)
            sys.stdout.flush()
            return
        import webbrowser

        click.echo(f"Recording page: {url} (Ctrl-C to stop)")
        if not webbrowser.open(url):
            click.echo("movement: no browser could be opened; open the address above", err=True)

    outcome = serve(cfg, on_url, say=lambda m: click.echo(m, err=True))
    if outcome.code:
        raise Failure(outcome.message, outcome.code)
    click.echo(outcome.message)
    click.echo(f"Open {out_dir / 'report.html'}")


@main.command()
@click.argument("patient")
@click.option("--session", "chosen", multiple=True, metavar="ID",
              help="A session to re-analyse: its id, label or date (repeatable).")
@click.option("--all-old", is_flag=True,
              help="Every session of PATIENT measured by an older measurement version.")
@click.option("--video", "videos", multiple=True, type=click.Path(dir_okay=False),
              help="A session's video where the stored path no longer finds it; matched to "
              "its session by sha256 (repeatable).")
@click.option("--no-images", is_flag=True, help="Report without face images (for sharing).")
@click.option("--store", "store_dir", type=click.Path(file_okay=False), default=None,
              help="Clinic store folder (default: $MOVEMENT_STORE or ./reports).")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
def reanalyze(
    patient: str, chosen: tuple[str, ...], all_old: bool, videos: tuple[str, ...],
    no_images: bool, store_dir: str | None, quiet: bool,
) -> None:
    """Analyse a PATIENT's stored sessions again from their videos, with the options each
    was analysed with, so they are measured like the newest (see `movement compare`).

    Each session gets a fresh folder beside its earlier one (which stays) and keeps its
    id in the store; the store changes only once the folder is complete.
    """
    from movement import MEASUREMENT_VERSION, consult

    signal.signal(signal.SIGTERM, _interrupt)
    if not chosen and not all_old:
        raise Failure("say which sessions: --session ID (repeatable) or --all-old", 2)
    where = Path(store_dir) if store_dir else None
    try:
        plans = consult.plan_reanalysis(where, patient, chosen, all_old,
                                        [Path(v) for v in videos])
        if not plans:
            click.echo(f"every session of '{patient}' is measured by version "
                       f"{MEASUREMENT_VERSION} already; nothing to re-analyse")
            return
        silent = quiet or not sys.stderr.isatty()
        for p in plans:
            prog = _Progress(0 if silent else sum(_frame_count(v) for v in p.videos), silent)
            consult.reanalyze(p, where, not no_images, prog)
            prog.close()
            kept = f"; the earlier analysis stays in {p.old_dir}" if p.old_dir else ""
            click.echo(f"session {p.session_id} ({p.date}{', ' + p.label if p.label else ''})"
                       f": measurement {p.version} -> {MEASUREMENT_VERSION}, written to "
                       f"{p.out}{kept}")
    except click.ClickException:
        raise
    except KeyboardInterrupt as exc:
        _fail(exc, "the session being re-analysed is unchanged")
    except Exception as exc:
        _fail(exc, "that session is unchanged")


def _register_clinic_commands() -> None:
    from movement.clinic.commands import COMMANDS

    for command in COMMANDS:
        main.add_command(command)


_register_clinic_commands()

if __name__ == "__main__":  # pragma: no cover
    main()
