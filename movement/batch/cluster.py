"""Where a batch runs: the ``--cluster`` address policy and the two executors.

An executor runs ``fn(task)`` for each submitted task and hands results back;
a lost worker surfaces as :class:`WorkerLost` so the engine can retry that
video once. The process pool is ``--jobs N``; Dask is ``--cluster``.
"""

from __future__ import annotations

import ipaddress
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from movement.batch.records import CLUSTER_UNAVAILABLE, INSTALL_HINT, BatchError

# --------------------------------------------------------------------------- cluster address


@dataclass(frozen=True)
class Tls:
    """The client's TLS files for a ``tls://`` scheduler (CA, certificate, key)."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def given(self) -> bool:
        return any((self.ca, self.cert, self.key))

    def complete(self) -> bool:
        return all((self.ca, self.cert, self.key))


@dataclass(frozen=True)
class ClusterSpec:
    """``local:N`` (``local_workers`` = N) or a scheduler ``address``."""

    local_workers: int = 0
    address: str = ""
    tls: Tls = field(default_factory=Tls)


def _is_loopback(host: str) -> bool:
    # Names other than localhost are not resolved: a name is another machine
    # unless it is a loopback address literally.
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _dask_tls_config() -> Tls:
    """TLS files set in dask's configuration (``distributed.comm.tls``), if any."""
    import dask.config

    def get(key: str) -> str | None:
        return dask.config.get(f"distributed.comm.tls.{key}", default=None) or None

    return Tls(get("ca-file"), get("client.cert"), get("client.key"))


def parse_cluster(
    spec: str, tls: Tls = Tls(), allow_unencrypted: bool = False,
    config_tls: Callable[[], Tls] = _dask_tls_config,
) -> ClusterSpec:
    """Check ``--cluster`` against the privacy policy; a :class:`BatchError` (2) if refused.

    ``local:N`` starts N worker processes here. ``tls://host:port`` needs the
    CA, the client certificate and its key (options, or dask's configuration).
    ``tcp://`` (or a bare ``host:port``) is plain text: accepted to a loopback
    address, refused to another host unless ``allow_unencrypted``, since the
    videos' paths and the results would cross the network readable.
    """
    spec = spec.strip()
    if spec.startswith("local:"):
        n = spec.removeprefix("local:")
        if not n.isdigit() or not 1 <= int(n) <= 64:
            raise BatchError(f"--cluster {spec}: local:N needs N from 1 to 64", 2)
        if tls.given():
            raise BatchError("--tls-ca/--tls-cert/--tls-key are for a tls:// scheduler", 2)
        return ClusterSpec(local_workers=int(n))
    scheme, sep, rest = spec.partition("://")
    if not sep:
        scheme, rest = "tcp", spec
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise BatchError(f"--cluster {spec}: give local:N, tls://HOST:PORT or tcp://HOST:PORT", 2)
    if scheme == "tls":
        if tls.given() and not tls.complete():
            raise BatchError(
                "a tls:// scheduler needs all of --tls-ca, --tls-cert and --tls-key", 2)
        if not tls.given():
            tls = config_tls()
            if not tls.complete():
                raise BatchError(
                    "a tls:// scheduler needs --tls-ca, --tls-cert and --tls-key "
                    "(or dask's distributed.comm.tls settings)", 2)
        return ClusterSpec(address=f"tls://{host}:{port}", tls=tls)
    if scheme != "tcp":
        raise BatchError(f"--cluster {spec}: only tls:// (or tcp:// on this machine) is supported",
                         2)
    if tls.given():
        raise BatchError("--tls-ca/--tls-cert/--tls-key are for a tls:// scheduler", 2)
    if not _is_loopback(host) and not allow_unencrypted:
        raise BatchError(
            f"--cluster {spec}: plain tcp:// to another machine sends patient data unencrypted; "
            "use tls:// with --tls-ca/--tls-cert/--tls-key, or pass --allow-unencrypted", 2)
    return ClusterSpec(address=f"tcp://{host}:{port}")


def require_dask() -> None:
    """A :class:`BatchError` (exit code 9) with the install line when Dask is missing."""
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError:
        raise BatchError(f"--cluster needs Dask: {INSTALL_HINT}", CLUSTER_UNAVAILABLE) from None


# --------------------------------------------------------------------------- executors


class WorkerLost(Exception):
    """The process running a video died (its video may be retried)."""


class PoolExecutor:
    """``--jobs N``: N local processes ("spawn": forking a process that already runs
    OpenCV/MediaPipe threads can deadlock or crash the child)."""

    ship = False

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._pool_of: dict[Future, ProcessPoolExecutor] = {}  # the videos in flight

    def free(self) -> int:
        """How many videos to submit now: a broken pool fails everything submitted to
        it, so no more than it runs at once."""
        return self.workers - len(self._pool_of)

    def submit(self, fn: Callable[[Any], Any], task: Any, name: str) -> Future:
        if self._pool is None:
            ctx = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
        try:
            fut = self._pool.submit(fn, task)
        except BrokenProcessPool:
            self._restart(self._pool)
            return self.submit(fn, task, name)
        self._pool_of[fut] = self._pool
        return fut

    def _restart(self, broken: ProcessPoolExecutor | None) -> None:
        # Only the pool that broke: its other futures report the same break
        # later, after a fresh pool may already run the resubmitted videos.
        if broken is not None and broken is self._pool:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        done, _ = wait_futures(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        return list(done)

    def result(self, handle: Future) -> Any:
        pool = self._pool_of.pop(handle, None)
        try:
            return handle.result()
        except BrokenProcessPool:
            self._restart(pool)
            raise WorkerLost from None

    def running(self) -> int:
        return len(self._pool_of)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


ORPHAN_GRACE_S = 10.0
"""How long a video's worker may be gone before the video counts as lost without the
scheduler saying so."""


class DaskExecutor:
    """``--cluster``: tasks on a dask.distributed client (local processes or a remote scheduler).

    Each video goes to a worker thread with nothing else of ours on it: left to
    itself the scheduler queues several videos on one worker (each is its own
    task group, so none is held back as a "root" task), and a worker that dies
    fails every video it holds. Each task's key names the video and the attempt,
    so a worker plugin (and the scheduler's logs) can tell them apart.
    """

    def __init__(self, client: Any, ship: bool, closers: tuple[Any, ...] = ()) -> None:
        self.client = client
        self.ship = ship
        self._closers = closers
        self._where: dict[Any, str] = {}  # the videos in flight and their worker
        self._free: list[str] = []  # the last look at the idle threads
        self._alive: set[str] = set()
        self._missing_since: dict[str, float] = {}

    def _free_threads(self) -> list[str]:
        """One worker address per idle thread (a fresh look at the scheduler: a dead
        worker is gone from it, a restarted one is back)."""
        workers = self.client.scheduler_info()["workers"]
        self._alive = set(workers)
        # The scheduler's list can miss a live worker for a moment (while it
        # handles another's death): only a continuous absence counts.
        now = time.monotonic()
        self._missing_since = {a: self._missing_since.get(a, now)
                               for a in set(self._where.values()) - self._alive if a}
        busy: dict[str, int] = {}
        for addr in self._where.values():
            busy[addr] = busy.get(addr, 0) + 1
        return [a for a, w in workers.items()
                for _ in range(max(w.get("nthreads", 1) - busy.get(a, 0), 0))]

    def free(self) -> int:
        self._free = self._free_threads()
        return len(self._free)

    def submit(self, fn: Callable[[Any], Any], task: Any, name: str) -> Any:
        """Submit to an idle thread seen by the last :meth:`free` (which the engine asks first)."""
        addr = self._free.pop(0) if self._free else None
        key = f"movement-{name}-{os.urandom(4).hex()}"
        # Strictly there: a loose placement let the scheduler put a second video
        # on a busy worker. Should that worker vanish first, :meth:`wait` notices.
        fut = self.client.submit(fn, task, key=key, pure=False, retries=0,
                                 workers=[addr] if addr else None, allow_other_workers=False)
        self._where[fut] = addr or ""
        return fut

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        from distributed import wait

        try:
            done, _ = wait(handles, timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            done = set()
        self._free_threads()  # refreshes the live workers
        # A video placed on a worker that died before starting it would wait for
        # that worker forever: it is lost like one that died while running. The
        # grace period leaves a death while running to the scheduler's report.
        now = time.monotonic()
        orphans = {h for h in handles if h not in done and self._where.get(h)
                   and now - self._missing_since.get(self._where[h], now) > ORPHAN_GRACE_S}
        return list(done | orphans)

    def result(self, handle: Any) -> Any:
        from distributed import KilledWorker

        self._where.pop(handle, None)
        if not handle.done():
            handle.cancel()
            raise WorkerLost
        try:
            return handle.result()
        except KilledWorker:
            raise WorkerLost from None

    def running(self) -> int:
        return len(self._where)

    def close(self) -> None:
        for c in self._closers:
            c.close()


class LazyExecutor:
    """Starts the executor at the first video to run: a rerun with nothing left to
    do starts no local cluster (several seconds of worker start-up)."""

    def __init__(self, factory: Callable[[], Any], ship: bool) -> None:
        self._factory, self.ship = factory, ship
        self._ex: Any = None

    def _get(self) -> Any:
        if self._ex is None:
            self._ex = self._factory()
        return self._ex

    def free(self) -> int:
        return self._get().free()

    def submit(self, fn: Callable[[Any], Any], task: Any, name: str) -> Any:
        return self._get().submit(fn, task, name)

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        return self._get().wait(handles, timeout)

    def result(self, handle: Any) -> Any:
        return self._get().result(handle)

    def running(self) -> int:
        return self._ex.running() if self._ex is not None else 0

    def close(self) -> None:
        if self._ex is not None:
            self._ex.close()


def open_dask(spec: ClusterSpec, lazy: bool = False) -> DaskExecutor | LazyExecutor:
    """Connect to (or start) the cluster; a :class:`BatchError` (9) when it cannot.

    ``lazy`` with ``local:N``: start it only when a video is to run. A remote
    scheduler is always reached at once, so a wrong address fails in seconds.
    """
    require_dask()
    import logging

    import dask.config
    from distributed import Client, LocalCluster
    from distributed.security import Security

    if spec.local_workers and lazy:
        return LazyExecutor(lambda: open_dask(spec, lazy=False), ship=False)
    try:
        if spec.local_workers:
            # Zero allowed failures: the scheduler gives up on a task at its first
            # lost worker and the engine retries it once itself, the same rule as
            # for a remote scheduler (whose own setting is not ours to change).
            with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
                cluster = LocalCluster(
                    n_workers=spec.local_workers, threads_per_worker=1, processes=True,
                    host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR,
                )
            client = Client(cluster)
            return DaskExecutor(client, ship=False, closers=(client, cluster))
        security = None
        if spec.address.startswith("tls://"):
            security = Security(tls_ca_file=spec.tls.ca, tls_client_cert=spec.tls.cert,
                                tls_client_key=spec.tls.key, require_encryption=True)
        client = Client(spec.address, security=security, timeout="20s")
    except (OSError, TimeoutError) as exc:
        where = spec.address or f"local:{spec.local_workers}"
        raise BatchError(f"cluster {where}: cannot connect ({exc})", CLUSTER_UNAVAILABLE) from None
    return DaskExecutor(client, ship=True, closers=(client,))
