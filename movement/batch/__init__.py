"""Batches of consults: one engine, two executors (a local process pool, or Dask workers).

``movement analyze ARCHIVE --batch`` analyses each video of a folder, or each
row of a manifest CSV, as its own consult into ``OUT/<video name>/``. The engine
is the same whichever executes the videos:

- **Workers compute, the client records.** A worker runs
  :func:`movement.consult.write_consult` and never opens the clinic store; the
  client (this process) records each finished folder and refreshes the
  patient's comparison, so SQLite is only ever written on the client's disk.
  Local workers (``--jobs N``, ``--cluster local:N``) write the session folder
  in place (atomically); remote workers write it to their own temporary folder
  and send its files back, and the client writes them, so results never need a
  shared output folder. Workers read the videos by their path: a remote
  cluster needs the archive mounted at the same path on every worker.
- **Resumable and idempotent.** ``OUT/.movement-batch.json`` (the ledger,
  rewritten atomically after every video) holds each video's outcome with
  what it was analysed from: the video's sha256, the protocol (name and
  version), the software and measurement versions and the manifest row (patient, label, date,
  mirrored, cues, face). A rerun skips a video
  whose fingerprint is unchanged and whose folder is still there; a failure
  stays failed until ``--retry-failed``.
- **A worker that dies loses its video only.** Each video goes to an idle
  worker thread, one at a time, so a worker holds no queued video; a video
  whose worker dies is submitted once more, and if that worker dies too it is
  reported (exit code 8) and the batch goes on. (A process pool cannot tell
  which of its processes died, so there every video running at that moment
  uses its retry.)
- **Outcomes.** ``OUT/batch-summary.csv`` lists every video of the batch: ok or
  failed, steps measured, low and unusable steps, the error and what its exit
  code means.

Remote schedulers are reached over TLS with client credentials only
(:func:`parse_cluster`); plain TCP is accepted to this machine, or to another
host only when the user passes ``--allow-unencrypted``.
"""

from movement.batch.cluster import (
    ClusterSpec,
    DaskExecutor,
    PoolExecutor,
    Tls,
    open_dask,
    parse_cluster,
    require_dask,
)
from movement.batch.engine import BatchProgress, BatchReport, analyse_task, run_batch
from movement.batch.records import (
    CLUSTER_UNAVAILABLE,
    EXIT_MEANINGS,
    LEDGER,
    SUMMARY,
    WORKER_DIED,
    BatchError,
    BatchItem,
    Outcome,
    decide,
    folder_items,
    read_ledger,
    read_manifest,
)

__all__ = [
    "CLUSTER_UNAVAILABLE", "EXIT_MEANINGS", "LEDGER", "SUMMARY", "WORKER_DIED", "BatchError",
    "BatchItem", "BatchProgress", "BatchReport", "ClusterSpec", "DaskExecutor", "Outcome",
    "PoolExecutor", "Tls", "analyse_task", "decide", "folder_items", "open_dask", "parse_cluster",
    "read_ledger", "read_manifest", "require_dask", "run_batch",
]
