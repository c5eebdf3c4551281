"""Protocols: the scripted steps and the landmark-to-muscle mapping, read from TOML.

A protocol is data a clinician can read and extend (``protocols/*.toml``); this
module only parses and validates it into frozen records. See
``protocols/standard.toml`` for the annotated format.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

N_LANDMARKS = 478
MEASURES = {"displacement_mm", "aperture_mm", "range_mm"}
KINDS = {"length", "up", "down", "medial", "lateral", "aperture", "opening"}
MODES = {"peak", "range"}
REST_KINDS = {"height", "aperture", "width"}
SENSORS = {"image", "landmarks", "hybrid"}


class ProtocolError(ValueError):
    """The protocol file is missing or invalid."""


@dataclass(frozen=True)
class MuscleGroup:
    """One muscle group a step measures, per side.

    For ``kind == "aperture"`` the ``right``/``left`` points are the upper lid and
    ``right_lower``/``left_lower`` the lower lid.
    """

    name: str
    measure: str
    kind: str
    sensor: str
    right: tuple[int, ...]
    left: tuple[int, ...]
    right_lower: tuple[int, ...] = ()
    left_lower: tuple[int, ...] = ()
    primary: bool = False
    note: str = ""
    half_ring: bool = False  # follow with the skin-side half of the sub-point ring
    affine: bool = False  # refine each image point with an affine patch (skin that bunches)
    cross_check_mm: float | None = None  # own limit of image vs landmark disagreement
    reliability: str = ""  # why a value may mislead (shown beside every reading)
    repeat_mm: float | None = None  # two recordings of one movement read this far apart
    # Share of the truth the method reads for this group (benchmark, at the generator's
    # own scale); < 1 widens the value's interval toward the truth (uncertainty.py).
    reads: float = 1.0
    # How much that share varies from consult to consult (1 sigma, relative).
    reads_spread: float = 0.03
    # The method's error on small movements (1 sigma, mm), which a share of the value
    # does not show: a movement of 0.2 mm does not read within 0.03 x 0.2 mm.
    reads_floor_mm: float = 0.05
    # Share of reads_spread's variance both sides of one consult have in common (their
    # correlation): a face whose eee reads 0.82 of the truth reads it so on both sides,
    # which shrinks the difference by that share rather than widening it.
    reads_shared: float = 0.0
    # The 95 % interval's half-width in units of 1.96 standard errors of its parts: the
    # share that held 95 % of this group's values on the accuracy benchmark (its
    # "interval scale" table). Normal parts with a calibrated spread would need 1; a
    # group whose errors have a heavier tail (a face that reads it short) needs more,
    # one whose parts overlap (a floor, a spread and a stretch toward reads) less.
    interval_scale: float = 1.0

    def points(self, side: str) -> tuple[int, ...]:
        return self.right if side == "right" else self.left

    def lower_points(self, side: str) -> tuple[int, ...]:
        return self.right_lower if side == "right" else self.left_lower

    @property
    def all_points(self) -> tuple[int, ...]:
        return self.right + self.left + self.right_lower + self.left_lower

    @property
    def outline(self) -> bool:
        """The points run along the face's outline (a jaw contour): skin on one side
        only, and each side's points in order along it."""
        return (
            self.half_ring
            and self.kind in ("medial", "lateral")
            and min(len(self.right), len(self.left)) >= 2
        )


@dataclass(frozen=True)
class CreaseRegion:
    """A skin region where a step folds lines, per side, and how its lines run.

    The region is the convex hull of the side's landmarks in the face frame
    (``shape = "hull"``), or with ``shape = "band"`` the line through them in their
    order (a band along an arched brow; the hull of an arch also holds the area
    under it), moved ``shift_mm`` (outward from the midline, up) and grown by
    ``margin_mm``; what ``covers`` names (the eye openings, the brows) is left out
    of it. ``orientation_deg`` is the direction the lines run on the
    patient's RIGHT side, in the face frame, counter-clockwise from the
    "toward the patient's left" axis as seen by the camera (0 = horizontal
    forehead lines, 90 = vertical glabellar lines); the left side is its
    mirror image. ``width_mm`` is the typical width of one fold.
    """

    name: str
    right: tuple[int, ...]
    left: tuple[int, ...]
    orientation_deg: float = 0.0
    width_mm: float = 1.0
    margin_mm: float = 0.0
    shift_mm: tuple[float, float] = (0.0, 0.0)
    note: str = ""
    shape: str = "hull"
    covers: tuple[str, ...] = ("eyes",)

    def points(self, side: str) -> tuple[int, ...]:
        return self.right if side == "right" else self.left


CREASE_SHAPES = ("hull", "band")
CREASE_COVERS = ("eyes", "brows")
"""What a crease region may leave out (``covers``): the eye openings, the brows."""


@dataclass(frozen=True)
class Step:
    name: str
    instruction: str
    duration_s: float
    anchors: tuple[str, ...]
    groups: tuple[MuscleGroup, ...]
    detect: str = ""  # measurement kind that finds the step; default: the detecting group's
    detect_group: str = ""  # group whose points find the step; default: the primary
    creases: tuple[CreaseRegion, ...] = ()
    mode: str = "peak"  # peak: one held expression; range: repeated movement (speech)
    merge_gap_s: float | None = None  # longer pauses than the protocol's still one bout
    min_bout_s: float | None = None  # a step that lasts (speech) is not a short bout

    @property
    def detect_kind(self) -> str:
        return self.detect or self.detecting.kind

    @property
    def detecting(self) -> MuscleGroup:
        """The group whose movement finds the step in the video (the primary by default)."""
        if self.detect_group:
            return next(g for g in self.groups if g.name == self.detect_group)
        return self.primary

    @property
    def primary(self) -> MuscleGroup:
        return next(g for g in self.groups if g.primary)


@dataclass(frozen=True)
class RestMeasure:
    name: str
    kind: str  # height | aperture
    right: tuple[int, ...]
    left: tuple[int, ...]
    right_lower: tuple[int, ...] = ()
    left_lower: tuple[int, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class MusclePair:
    """Neighbouring muscles balanced together: quieting one can reveal the other."""

    name: str
    first: tuple[str, str]  # (step, muscle_group)
    second: tuple[str, str]
    note: str = ""


@dataclass(frozen=True)
class Thresholds:
    min_diff_mm: float = 1.0
    min_ratio: float = 0.20
    # Resting asymmetry: a side differs when it is this far from the other.
    rest_min_diff_mm: float = 1.0
    # Counts (movements during speech) and creases have no mm: relative rules.
    min_count_diff: int = 2
    crease_min_ratio: float = 1.3
    crease_min: float = 2.0


@dataclass(frozen=True)
class Detection:
    min_bout_s: float = 0.5
    merge_gap_s: float = 0.3
    rest_window_s: float = 1.0


@dataclass(frozen=True)
class Plausibility:
    max_displacement_mm: float = 15.0
    min_aperture_change_mm: float = -1.0
    max_sensor_disagreement_mm: float = 2.5


@dataclass(frozen=True)
class Protocol:
    name: str
    title: str
    description: str
    version: int
    steps: tuple[Step, ...]
    anchors: dict[str, tuple[int, ...]]
    midline: dict[str, tuple[int, ...]]
    rest_measures: tuple[RestMeasure, ...]
    pairs: tuple[MusclePair, ...] = ()
    thresholds: Thresholds = field(default_factory=Thresholds)
    detection: Detection = field(default_factory=Detection)
    plausibility: Plausibility = field(default_factory=Plausibility)
    path: str = ""

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise ProtocolError(f"protocol '{self.name}' has no step '{name}'")

    def anchor_points(self, step: Step) -> tuple[int, ...]:
        pts: list[int] = []
        for region in step.anchors:
            pts.extend(p for p in self.anchors[region] if p not in pts)
        return tuple(pts)

    def subset(self, names: list[str]) -> Protocol:
        """The same protocol restricted to ``names`` (in the given order)."""
        steps = tuple(self.step(n) for n in names)
        return Protocol(**{**self.__dict__, "steps": steps})


def protocol_dirs() -> list[Path]:
    """Where named protocols are looked up, first match wins.

    ``$MOVEMENT_PROTOCOLS`` (colon-separated) lets a clinic keep its own
    protocols outside the installation.
    """
    dirs = [Path(p) for p in os.environ.get("MOVEMENT_PROTOCOLS", "").split(os.pathsep) if p]
    here = Path(__file__).resolve().parent
    dirs += [here / "_protocols", here.parent / "protocols"]
    return [d for d in dirs if d.is_dir()]


def available_protocols() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in protocol_dirs():
        for p in sorted(d.glob("*.toml")):
            found.setdefault(p.stem, p)
    return found


def _ints(value: object, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
        raise ProtocolError(f"{where}: expected a list of landmark numbers")
    bad = [v for v in value if not 0 <= v < N_LANDMARKS]
    if bad:
        raise ProtocolError(f"{where}: landmark numbers out of range 0-{N_LANDMARKS - 1}: {bad}")
    return tuple(value)


def _number(
    raw: dict, key: str, where: str, default: float | None = None, what: str = "a number"
) -> float | None:
    """An optional number; a clear error for a text or a list where one belongs."""
    value = raw.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"{where}: {key} must be {what} (got {value!r})")
    return float(value)


def _numbers(table: object, where: str) -> dict:
    """A table of numbers ([thresholds], [detection], [plausibility]), checked."""
    if not isinstance(table, dict):
        raise ProtocolError(f"{where} must be a table")
    for k in table:
        _number(table, k, where)
    return dict(table)


def _positive_mm(raw: dict, key: str, where: str) -> float | None:
    """An optional positive number of mm; a clear error for anything else."""
    what = "a positive number of mm"
    value = _number(raw, key, where, what=what)
    if value is not None and not value > 0:
        raise ProtocolError(f"{where}: {key} must be {what} (got {raw[key]!r})")
    return value


DEFAULT_READS_SPREAD = 0.03
"""A group's ``reads_spread`` when its protocol gives none: the order of the standard
primaries' (0.026-0.063, accuracy benchmark at the generator's own scale)."""


DEFAULT_READS_FLOOR_MM = 0.05
"""A group's ``reads_floor_mm`` when its protocol gives none: the order of the standard
steps' error on movements under 1 mm (0.03-0.06 mm, the frown's 0.09; accuracy
benchmark at the generator's own scale)."""


def _share(raw: dict, key: str, where: str, default: float = 1.0) -> float:
    """An optional share of the truth, in [0, 2) (``default`` when absent)."""
    what = "a number from 0 to 2"
    value = _number(raw, key, where, what=what)
    if value is None:
        return default
    if not 0 <= value < 2 or (key == "reads" and value == 0):
        raise ProtocolError(f"{where}: {key} must be {what} (got {raw[key]!r})")
    return value


INTERVAL_SCALE_RANGE = (0.3, 3.0)
"""Allowed ``interval_scale``: outside it the parts' model, not its width, is wrong."""


def _interval_scale(raw: dict, where: str) -> float:
    """A group's optional ``interval_scale`` (1 when absent), within INTERVAL_SCALE_RANGE."""
    lo, hi = INTERVAL_SCALE_RANGE
    value = _number(raw, "interval_scale", where, what=f"a number from {lo:g} to {hi:g}")
    if value is None:
        return 1.0
    if not lo <= value <= hi:
        raise ProtocolError(f"{where}: interval_scale must be a number from {lo:g} to {hi:g}"
                            f" (got {raw['interval_scale']!r})")
    return value


def _group(raw: dict, where: str) -> MuscleGroup:
    try:
        g = MuscleGroup(
            name=str(raw["muscle_group"]),
            measure=str(raw["measure"]),
            kind=str(raw["kind"]),
            sensor=str(raw.get("sensor", "image")),
            right=_ints(raw["right"], f"{where}.right"),
            left=_ints(raw["left"], f"{where}.left"),
            right_lower=_ints(raw.get("right_lower", []), f"{where}.right_lower"),
            left_lower=_ints(raw.get("left_lower", []), f"{where}.left_lower"),
            primary=bool(raw.get("primary", False)),
            note=str(raw.get("note", "")),
            half_ring=bool(raw.get("half_ring", False)),
            affine=bool(raw.get("affine", False)),
            cross_check_mm=_positive_mm(raw, "cross_check_mm", where),
            reliability=str(raw.get("reliability", "")),
            repeat_mm=_positive_mm(raw, "repeat_mm", where),
            reads=_share(raw, "reads", where),
            reads_spread=_share(raw, "reads_spread", where, default=DEFAULT_READS_SPREAD),
            reads_floor_mm=_positive_mm(raw, "reads_floor_mm", where) or DEFAULT_READS_FLOOR_MM,
            reads_shared=_share(raw, "reads_shared", where, default=0.0),
            interval_scale=_interval_scale(raw, where),
        )
    except KeyError as exc:
        raise ProtocolError(f"{where}: missing field {exc}") from None
    if not 0 <= g.reads_shared < 1:
        raise ProtocolError(f"{where}: reads_shared must be a number from 0 to 1 "
                            f"(got {g.reads_shared!r})")
    if g.measure not in MEASURES:
        raise ProtocolError(f"{where}: measure must be one of {sorted(MEASURES)}")
    if g.kind not in KINDS:
        raise ProtocolError(f"{where}: kind must be one of {sorted(KINDS)}")
    if g.sensor not in SENSORS:
        raise ProtocolError(f"{where}: sensor must be one of {sorted(SENSORS)}")
    if not isinstance(raw.get("affine", False), bool):
        raise ProtocolError(f"{where}: affine must be true or false")
    if not g.right or not g.left:
        raise ProtocolError(f"{where}: both sides need points")
    if g.kind in ("aperture", "opening") and (not g.right_lower or not g.left_lower):
        raise ProtocolError(f"{where}: {g.kind} needs right_lower and left_lower")
    return g


def _crease(raw: dict, where: str) -> CreaseRegion:
    try:
        shift = raw.get("shift_mm", [0.0, 0.0])
        if not isinstance(shift, list) or len(shift) != 2:
            raise ProtocolError(f"{where}: shift_mm must be [outward, up]")
        return CreaseRegion(
            name=str(raw["name"]),
            right=_ints(raw["right"], f"{where}.right"),
            left=_ints(raw["left"], f"{where}.left"),
            orientation_deg=float(raw.get("orientation_deg", 0.0)),
            width_mm=float(raw.get("width_mm", 1.0)),
            margin_mm=float(raw.get("margin_mm", 0.0)),
            shift_mm=(float(shift[0]), float(shift[1])),
            note=str(raw.get("note", "")),
            shape=_crease_shape(raw.get("shape", "hull"), where),
            covers=_crease_covers(raw.get("covers", ["eyes"]), where),
        )
    except KeyError as exc:
        raise ProtocolError(f"{where}: missing field {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"{where}: {exc}") from None


def _crease_shape(value: object, where: str) -> str:
    if value not in CREASE_SHAPES:
        raise ProtocolError(f"{where}: shape must be one of {', '.join(CREASE_SHAPES)}, "
                            f"not {value!r}")
    return str(value)


def _crease_covers(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or any(v not in CREASE_COVERS for v in value):
        raise ProtocolError(f"{where}: covers must be a list of {', '.join(CREASE_COVERS)}, "
                            f"not {value!r}")
    return tuple(dict.fromkeys(value))


def _pair(raw: dict, where: str, steps: dict[str, Step]) -> MusclePair:
    def ref(key: str) -> tuple[str, str]:
        value = raw.get(key)
        if not isinstance(value, str) or value.count(":") != 1:
            raise ProtocolError(f"{where}: {key} must be 'step:muscle_group'")
        step, group = value.split(":")
        if step not in steps or group not in {g.name for g in steps[step].groups}:
            raise ProtocolError(f"{where}: {key} '{value}' names no step's muscle group")
        return step, group

    return MusclePair(str(raw.get("name", "")), ref("first"), ref("second"),
                      str(raw.get("note", "")))


def _merge(base: dict, data: dict) -> dict:
    """``data`` on top of ``base``: its steps, rest measures and pairs are added
    (replacing those of the same name), its tables update the base's."""
    out = {**base, **{k: v for k, v in data.items() if k != "extends"}}
    for key in ("anchors", "midline", "thresholds", "detection", "plausibility"):
        out[key] = {**base.get(key, {}), **data.get(key, {})}
    for key in ("steps", "rest_measures", "pairs"):
        names = {r.get("name") for r in data.get(key, [])}
        out[key] = [r for r in base.get(key, []) if r.get("name") not in names] + list(
            data.get(key, [])
        )
    return out


def parse_protocol(data: dict, path: str = "") -> Protocol:
    """Validate a protocol's parsed TOML into a :class:`Protocol`."""
    where = path or "protocol"
    anchors = {k: _ints(v, f"{where}: anchors.{k}") for k, v in data.get("anchors", {}).items()}
    midline = {k: _ints(v, f"{where}: midline.{k}") for k, v in data.get("midline", {}).items()}
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ProtocolError(f"{where}: no [[steps]]")
    steps = []
    for i, rs in enumerate(raw_steps):
        sw = f"{where}: steps[{i}]"
        if "name" not in rs:
            raise ProtocolError(f"{sw}: missing name")
        groups = tuple(
            _group(g, f"{sw}.groups[{j}]") for j, g in enumerate(rs.get("groups", []))
        )
        if sum(g.primary for g in groups) != 1:
            raise ProtocolError(f"{sw} ({rs['name']}): exactly one group must be primary")
        if rs.get("detect", "") not in ("", *KINDS):
            raise ProtocolError(f"{sw}: detect must be one of {sorted(KINDS)}")
        detect_group = str(rs.get("detect_group", ""))
        if detect_group and detect_group not in [g.name for g in groups]:
            raise ProtocolError(f"{sw}: detect_group must name one of the step's groups")
        if rs.get("mode", "peak") not in MODES:
            raise ProtocolError(f"{sw}: mode must be one of {sorted(MODES)}")
        creases = tuple(
            _crease(c, f"{sw}.creases[{j}]") for j, c in enumerate(rs.get("creases", []))
        )
        regions = tuple(rs.get("anchors", list(anchors)))
        unknown = [r for r in regions if r not in anchors]
        if unknown or not regions:
            raise ProtocolError(f"{sw}: unknown anchor regions {unknown}")
        steps.append(
            Step(
                name=str(rs["name"]),
                instruction=str(rs.get("instruction", "")),
                duration_s=float(_number(rs, "duration_s", sw, 3.0)),  # type: ignore[arg-type]
                anchors=regions,
                groups=groups,
                detect=str(rs.get("detect", "")),
                detect_group=detect_group,
                creases=creases,
                mode=str(rs.get("mode", "peak")),
                merge_gap_s=_number(rs, "merge_gap_s", sw),
                min_bout_s=_number(rs, "min_bout_s", sw),
            )
        )
    names = [s.name for s in steps]
    if len(set(names)) != len(names):
        raise ProtocolError(f"{where}: step names repeat")
    rest = []
    for r in data.get("rest_measures", []):
        rw = f"{where}: rest_measures.{r.get('name', '?')}"
        try:
            m = RestMeasure(
                name=str(r["name"]),
                kind=str(r["kind"]),
                right=_ints(r["right"], f"{rw}.right"),
                left=_ints(r["left"], f"{rw}.left"),
                right_lower=_ints(r.get("right_lower", []), f"{rw}.right_lower"),
                left_lower=_ints(r.get("left_lower", []), f"{rw}.left_lower"),
                note=str(r.get("note", "")),
            )
        except KeyError as exc:
            raise ProtocolError(f"{rw}: missing field {exc}") from None
        if m.kind not in REST_KINDS:
            raise ProtocolError(f"{rw}: kind must be one of {sorted(REST_KINDS)}")
        if m.kind == "aperture" and (not m.right_lower or not m.left_lower):
            raise ProtocolError(f"{rw}: aperture needs right_lower and left_lower")
        rest.append(m)
    by_name = {s.name: s for s in steps}
    pairs = tuple(
        _pair(p, f"{where}: pairs[{i}]", by_name) for i, p in enumerate(data.get("pairs", []))
    )
    try:
        return Protocol(
            name=str(data.get("name", Path(path).stem or "protocol")),
            title=str(data.get("title", data.get("name", ""))),
            description=str(data.get("description", "")),
            version=int(data.get("version", 1)),
            steps=tuple(steps),
            anchors=anchors,
            midline=midline,
            rest_measures=tuple(rest),
            pairs=pairs,
            thresholds=Thresholds(**_numbers(data.get("thresholds", {}), f"{where}: thresholds")),
            detection=Detection(**_numbers(data.get("detection", {}), f"{where}: detection")),
            plausibility=Plausibility(
                **_numbers(data.get("plausibility", {}), f"{where}: plausibility")
            ),
            path=path,
        )
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"{where}: {exc}") from None


def load_protocol(name_or_path: str | os.PathLike[str]) -> Protocol:
    """Load a protocol by name (``standard``) or by path to a ``.toml`` file."""
    p = Path(name_or_path)
    if p.suffix != ".toml" or not p.exists():
        found = available_protocols()
        if str(name_or_path) not in found:
            raise ProtocolError(
                f"protocol '{name_or_path}' not found (available: {', '.join(found) or 'none'})"
            )
        p = found[str(name_or_path)]
    return parse_protocol(_read(p, ()), str(p))


def _read(p: Path, seen: tuple[Path, ...]) -> dict:
    """A protocol file's TOML, with the protocol it ``extends`` merged underneath."""
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProtocolError(f"protocol {p}: {exc}") from None
    base = data.get("extends")
    if not base:
        return data
    if p.resolve() in seen:
        raise ProtocolError(f"protocol {p}: 'extends' loops back to itself")
    found = available_protocols()
    bp = p.parent / f"{base}.toml"
    if not bp.exists():
        if str(base) not in found:
            raise ProtocolError(f"protocol {p}: extends unknown protocol '{base}'")
        bp = found[str(base)]
    return _merge(_read(bp, (*seen, p.resolve())), data)
