"""Network threads per run and OpenMP's wait policy (genretag.pipeline.threads)."""

from __future__ import annotations

import os

import pytest
import torch

from genretag.pipeline.threads import THREADS_ENV, network_threads, prefer_passive_openmp, torch_threads, usable_cores


def test_default_is_one_thread_per_usable_core(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert network_threads() == usable_cores() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("value", "want"), [("1", 1), ("3", 3), (" 2 ", 2), ("256", 256), ("0", None), ("257", None), ("many", None)])
def test_environment_overrides_with_a_positive_count(monkeypatch, caplog, value, want):
    monkeypatch.setenv(THREADS_ENV, value)
    with caplog.at_level("WARNING", logger="genretag"):
        assert network_threads() == (want if want is not None else usable_cores())
        network_threads()
    warned = [r.getMessage() for r in caplog.records]
    if want is None:  # said once per process, not once per call
        assert warned == [f"GENRETAG_THREADS={value!r} ignored: expected a number from 1 to 256 or 'load'"]
    else:
        assert warned == []


def test_an_unknown_schedule_is_warned_about_and_the_default_applies(monkeypatch, caplog):
    from genretag.pipeline.inference import schedule

    monkeypatch.setenv("GENRETAG_SCHEDULE", "Rounds")
    assert schedule() == "rounds"
    monkeypatch.setenv("GENRETAG_SCHEDULE", "bogus")
    with caplog.at_level("WARNING", logger="genretag"):
        assert schedule() == "workers"
    assert [r.getMessage() for r in caplog.records] == [
        "GENRETAG_SCHEDULE='bogus' ignored: expected 'workers' or 'stream' or 'rounds'"]


def test_load_leaves_out_busy_cores(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "load")
    cores = usable_cores()
    monkeypatch.setattr(os, "getloadavg", lambda: (cores + 5.0, 0.0, 0.0))
    assert network_threads() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert network_threads() == cores


def test_torch_threads_are_restored_after_the_block():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_passive_openmp_only_when_the_user_did_not_choose(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    prefer_passive_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    prefer_passive_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_decoding_workers_follow_the_cores_this_process_may_use(monkeypatch):
    from genretag.pipeline.inference import default_jobs

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})  # as under `taskset -c 0`
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert default_jobs() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)))
    assert default_jobs() == 8


def test_max_jobs_lives_with_the_threads_and_its_old_home_warns():
    from genretag.pipeline import threads
    from genretag.training import limits

    assert limits.RANGES["jobs"] == (1, threads.MAX_JOBS)
    with pytest.warns(DeprecationWarning, match=r"genretag.training.limits.MAX_JOBS is deprecated and will be "
                                                r"removed in genretag 0.4.0; use genretag.pipeline.threads.MAX_JOBS"):
        assert limits.MAX_JOBS == threads.MAX_JOBS
    with pytest.raises(AttributeError, match="no attribute 'MAX_CORES'"):
        limits.MAX_CORES  # noqa: B018
