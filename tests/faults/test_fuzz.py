"""Property-based fuzzing of the decoders (genretag.audio) and the tag reader/writer (genretag.tags).

Each example takes a valid, tagged file of one format (see `fuzzing.SEEDS`),
applies up to four random mutations (bit flips, byte changes, truncation,
inserted and deleted bytes, duplicated spans and duplicated structural units:
ID3 frames, Ogg pages, MP4 atoms, RIFF/IFF chunks, mp3 frames), then checks the
contract of `fuzzing.check_decode` and `fuzzing.check_tags`: a one-line
`GenretagError` or a correct result, never another exception, never a hang;
a refused write leaves the file byte-identical, a write keeps the audio and
every other field byte-identical.

GENRETAG_FUZZ_EXAMPLES sets the examples per seed file (default 200, 1,800
in all for the nine seeds); `bench/fuzz.py` runs thousands and
writes a JSON report. Hypothesis runs derandomized with no example database, and
its home folder is a temporary one, so nothing is written outside pytest's temporary folders.
"""

from __future__ import annotations

import os

import pytest
from fuzzing import SEEDS, make_seed, mutation_strategy, run_case
from hypothesis import HealthCheck, given, settings

EXAMPLES = int(os.environ.get("GENRETAG_FUZZ_EXAMPLES", "200"))


@pytest.fixture(autouse=True, scope="module")
def hypothesis_home(tmp_path_factory):
    """Hypothesis's own files (its cache of constants) in a temporary folder, not `.hypothesis/` in the checkout."""
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis-home"))
    yield
    set_hypothesis_home_dir(None)


@pytest.mark.slow
@pytest.mark.parametrize("name", SEEDS)
def test_fuzz_decode_and_tag_write(name, tmp_path_factory):
    seed = make_seed(name, tmp_path_factory.mktemp("seed"))
    work = tmp_path_factory.mktemp("fuzz")
    seen: dict[str, int] = {}

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(mutation_strategy(len(seed)))
    def check(ops):
        for outcome in run_case(seed, ops, work, name):
            seen[outcome.split(":")[0]] = seen.get(outcome.split(":")[0], 0) + 1

    check()
    print(f"{name}: {seen}")
