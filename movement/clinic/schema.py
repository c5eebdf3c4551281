"""The clinic store's SQLite schema: one list of statements per version, applied in
order by :mod:`movement.clinic.store` (a store is never rebuilt: each version only
adds to the one before, so stores written by earlier versions open and migrate)."""

from __future__ import annotations

# Marks the file as a movement store ("MOVE"), so a foreign SQLite file that
# happens to carry the name is refused instead of migrated.
APPLICATION_ID = 0x4D4F5645

MIGRATIONS: list[list[str]] = [
    # 1: the first schema.
    [
        f"PRAGMA application_id = {APPLICATION_ID}",
        """CREATE TABLE patients (
            id INTEGER PRIMARY KEY,
            patient TEXT NOT NULL UNIQUE,      -- verbatim, as the clinician typed it
            created TEXT NOT NULL
        )""",
        """CREATE TABLE sessions (
            id INTEGER PRIMARY KEY,
            patient_id INTEGER NOT NULL REFERENCES patients(id) ON DELETE CASCADE,
            video_key TEXT NOT NULL,           -- the clips' sha256, space-separated, in order
            date TEXT NOT NULL,                -- YYYY-MM-DD
            label TEXT NOT NULL DEFAULT '',
            protocol TEXT NOT NULL DEFAULT '',
            protocol_version TEXT,
            min_diff_mm REAL,
            min_ratio REAL,
            software TEXT,
            analysed TEXT,                     -- session.json "created"
            recorded TEXT NOT NULL,            -- when this row was (re)written
            source TEXT NOT NULL,              -- 'analyze' or 'import'
            content_sha TEXT NOT NULL,         -- digest of the numbers (import: unchanged?)
            session_dir TEXT,                  -- absolute paths, NULL when unknown
            report_path TEXT,
            landmarks_path TEXT,
            session_json TEXT,                 -- the full session.json, for later migrations
            UNIQUE (patient_id, video_key)
        )""",
        "CREATE INDEX sessions_by_patient ON sessions(patient_id, date)",
        """CREATE TABLE clips (
            session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            idx INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            path TEXT,
            PRIMARY KEY (session_id, idx)
        )""",
        "CREATE INDEX clips_by_sha ON clips(sha256)",
        """CREATE TABLE asymmetry (
            session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            row INTEGER NOT NULL,
            step TEXT NOT NULL, muscle_group TEXT NOT NULL, measure TEXT NOT NULL,
            is_primary INTEGER NOT NULL,
            right_mm REAL, left_mm REAL, diff_mm REAL, asymmetry_index REAL,
            dominant_side TEXT NOT NULL, quality TEXT NOT NULL, reason TEXT NOT NULL,
            peak_s REAL,
            PRIMARY KEY (session_id, row)
        )""",
        """CREATE TABLE metrics (
            session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            row INTEGER NOT NULL,
            step TEXT NOT NULL, muscle_group TEXT NOT NULL, measure TEXT NOT NULL,
            kind TEXT NOT NULL, sensor TEXT NOT NULL, side TEXT NOT NULL,
            peak_s REAL, rest_mm REAL, peak_mm REAL, activation_mm REAL, check_mm REAL,
            rest_frames TEXT NOT NULL, peak_frames TEXT NOT NULL, keyframe INTEGER,
            flags TEXT NOT NULL,
            PRIMARY KEY (session_id, row)
        )""",
        """CREATE TABLE midline (
            session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            row INTEGER NOT NULL,
            step TEXT NOT NULL, points TEXT NOT NULL, drift_mm REAL, toward TEXT NOT NULL,
            PRIMARY KEY (session_id, row)
        )""",
        """CREATE TABLE rest (
            session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            row INTEGER NOT NULL,
            measure TEXT NOT NULL, right_mm REAL, left_mm REAL, diff_mm REAL,
            larger_side TEXT NOT NULL,
            PRIMARY KEY (session_id, row)
        )""",
        """CREATE TABLE warnings (
            session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            row INTEGER NOT NULL,
            text TEXT NOT NULL,
            PRIMARY KEY (session_id, row)
        )""",
        """CREATE TABLE treatments (
            id INTEGER PRIMARY KEY,
            uid TEXT NOT NULL UNIQUE,          -- survives export/import, so import is idempotent
            patient_id INTEGER NOT NULL REFERENCES patients(id) ON DELETE CASCADE,
            date TEXT NOT NULL,
            product TEXT NOT NULL,
            muscle_group TEXT NOT NULL,
            side TEXT NOT NULL CHECK (side IN ('right', 'left', 'midline')),
            units REAL NOT NULL CHECK (units >= 0),
            point TEXT NOT NULL DEFAULT '',
            lot TEXT NOT NULL DEFAULT '',
            notes TEXT NOT NULL DEFAULT '',
            recorded TEXT NOT NULL
        )""",
        "CREATE INDEX treatments_by_patient ON treatments(patient_id, date)",
    ],
    # 2: how each session's numbers were made (MEASUREMENT_VERSION); earlier ones are 0.
    ["ALTER TABLE sessions ADD COLUMN measurement_version INTEGER NOT NULL DEFAULT 0"],
    # 3: each value's and the side difference's 95 % interval, and why the side call is
    # what it is (records.CALL_COLUMNS); NULL for sessions stored before them.
    [*(f"ALTER TABLE asymmetry ADD COLUMN {c} REAL"
       for c in ("right_lo", "right_hi", "left_lo", "left_hi", "diff_lo", "diff_hi")),
     "ALTER TABLE asymmetry ADD COLUMN call_reason TEXT"],
]
SCHEMA_VERSION = len(MIGRATIONS)
