"""How many threads the network runs on (CPU), chosen per run.

Kept apart from the model code because the answer depends on the machine, not on
the model: how many cores this process may use (`os.sched_getaffinity`, which
honours taskset, cgroup cpusets and container limits) and how busy they already are.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

THREADS_ENV = "GENRETAG_THREADS"
#: The most threads `GENRETAG_THREADS` may ask for: far more than any CPU's cores, far fewer than
#: the tens of thousands at which OpenMP runs out of stacks and the process crashes.
MAX_THREADS = 256
#: The most decoding worker processes `--jobs` may ask for (classify, tag, train, ...): beyond this is a
#: typo, not a machine (each job is a process of its own).
MAX_JOBS = 256

log = logging.getLogger(__name__)


_warned: set[tuple[str, str]] = set()


def warn_ignored(variable: str, value: str, expected: str) -> None:
    """One warning per process for an environment setting genretag cannot use (its default applies)."""
    if (variable, value) not in _warned:
        _warned.add((variable, value))
        log.warning("%s=%r ignored: expected %s", variable, value, expected)


def prefer_passive_openmp() -> None:
    """Make OpenMP threads sleep, not spin, while they wait for work, unless the user chose.

    libgomp's default keeps an idle thread spinning for a while after each parallel
    region. On a machine with other work that spinning takes the cores the decoders and
    the other programs need, and a team of spinning threads waits on a preempted member
    (docs/performance.md: 60 clips on a busy machine, 42.1 CPU seconds spinning, 16.2
    passive). Takes effect only before torch first starts OpenMP, so the CLI calls it at
    start-up; a library user sets ``OMP_WAIT_POLICY`` in the environment instead.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def network_threads() -> int:
    """Threads for the network: ``$GENRETAG_THREADS`` (a number, or ``load`` to leave out
    the cores the 1-minute load average says are busy), else one per usable core."""
    cores = usable_cores()
    want = os.environ.get(THREADS_ENV, "").strip().lower()
    if want.isdigit() and 0 < int(want) <= MAX_THREADS:
        return int(want)
    if want and want != "load":
        warn_ignored(THREADS_ENV, want, f"a number from 1 to {MAX_THREADS} or 'load'")
    if want == "load":
        try:
            busy = os.getloadavg()[0]
        except OSError:
            busy = 0.0
        return max(1, min(cores, round(cores - busy)))
    return cores


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to n for the block, and restored after it. Nothing to set in
    a process that has not imported torch (a model run by ONNX Runtime sets its own threads):
    torch is not imported for it."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return

    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """numpy's BLAS (OpenBLAS, MKL) on n threads for the block, and restored after it.

    The numpy log-mel of a network run by ONNX Runtime (`genretag.runtime.frontend`) multiplies
    by its mel matrix in BLAS. OpenBLAS's own pool of one thread per core then wakes for every
    small product and spins beside the decoding workers and ONNX Runtime's threads: 40 tracks
    took 4.1-7.6 s instead of 2.5 s on 2 cores. One thread is plenty for a product that size.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n, user_api="blas"):
        yield
