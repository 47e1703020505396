"""The network in the decoding workers: each worker decodes a file, runs its sub-tracks through
its own copy of the network and votes; only the result comes back.

This is how `Classifier` runs a model that ONNX Runtime runs on the CPU from its recorded export
(`genretag.runtime.open_export`, no torch), with more than one job: each worker opens the export
once, on one thread. Otherwise the decoding workers and this process's network share the cores:
the network waits for decoded audio, the decoders wait for their window to move, each sub-track's
waveform is pickled from a worker to this process, and both stages' threads take turns on the same
cores. Run in the worker, a file's decoding and network run one after the other on one core, and
every core does that for a file of its own. The answers are those of the network run here (the same
export, the same early-exit rule; each file's sub-tracks go through it in batches of their own). The
figures are in docs/performance.md ("The network in the decoding workers").

A model run by PyTorch (``--precision fp32`` or ``bf16``, a ResNet, an ensemble, CUDA) stays in
this process, where one copy of it batches sub-tracks of many files: importing torch in every
worker would cost each of them hundreds of megabytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from genretag.card import load_card
from genretag.errors import ModelError, one_line
from genretag.model import Model, from_export, load_net
from genretag.pipeline.early_exit import EarlyExit, applied
from genretag.pipeline.inference import (
    TrackResult,
    WorkerStream,
    default_batch_segments,
    error_result,
    run_model,
    worker_pool,
)
from genretag.pipeline.prepare import input_name, prepare_file
from genretag.runtime import ExportRecord, card_key
from genretag.store.resolve import find_card


@dataclass(frozen=True)
class WorkerModel:
    """What a worker needs to open the model itself: its card file and the export's key (small,
    picklable; the model and its ONNX Runtime session are not)."""

    card_path: str
    key: str
    verify: bool = True

    @classmethod
    def of(cls, model) -> WorkerModel | None:
        """The model as its workers open it, or None when it runs in this process: anything but
        one model loaded from a card that ONNX Runtime runs on the CPU from a recorded export."""
        if (not isinstance(model, Model) or model.members or model.path is None
                or model.device_type != "cpu" or model.precision != "auto"):
            return None
        if model.runtime != "onnxruntime fp32":  # builds (and records) the export on a model's first use
            return None
        return cls._if_recorded(model.path, model.card, model.verify)

    @classmethod
    def recorded(cls, name_or_path: str | os.PathLike | None) -> WorkerModel | None:
        """The model `load_model(name_or_path)` would load, as its workers open it, when its export
        is recorded (before the model is loaded here); None otherwise, or for a name that does
        not resolve (loading it says why)."""
        try:
            card_path = find_card(name_or_path)
            card = load_card(card_path)
        except Exception:  # noqa: BLE001 - load_model reports a bad name or card with its own message
            return None
        return cls._if_recorded(card_path, card)

    @classmethod
    def _if_recorded(cls, card_path, card, verify: bool = True) -> WorkerModel | None:
        if ExportRecord.for_card(card) is None:
            return None
        return cls(str(card_path), card_key(card), verify)

    def open(self, *, fallback: bool = True) -> Model | None:
        """The model in this worker: opened on first use, on one thread, and kept for the next file.

        Its card must still be the one the run started with. Should its export fail to open here
        (the cache changed under the run), the model is built in PyTorch, which records the export
        again: slower, the same answers; without `fallback`, None then."""
        model = _opened.get(self)
        if model is not None:
            return model
        card = load_card(self.card_path)
        if card_key(card) != self.key:
            raise ModelError(f"{self.card_path}: the model card changed during the run")
        model = from_export(card, Path(self.card_path), threads=1, verify=self.verify)
        if model is None and fallback:
            model = load_net(self.card_path, "cpu", verify=self.verify, precision="auto")
        if model is not None:
            _opened.clear()  # one model open per worker
            _opened[self] = model
        return model


def start_workers(ref: WorkerModel, jobs: int) -> None:
    """Start the `jobs` workers and have them open the model now, while this process goes on reading
    the model's card and the command line: a run's first files then wait for neither. Returns at once."""
    executor = worker_pool(jobs)
    for _ in range(jobs):
        executor.submit(_warm, ref)


def _warm(ref: WorkerModel) -> None:
    """Open `ref` in this worker if its export opens (a worker that cannot, tries again on its first file)."""
    ref.open(fallback=False)


#: The model this worker process has open, by what it was opened from.
_opened: dict[WorkerModel, Model] = {}


def classify_in_worker(path, ref: WorkerModel, vote: str, segments: int | None,
                       early_exit: EarlyExit | None) -> TrackResult:
    """One file, start to end, in a worker: decoded (only the sub-tracks `early_exit` looks at
    first, then the rest if the vote needs them), through the network, voted. Never raises: a
    file the network fails on gets an error result, as an undecodable one does."""
    try:
        model = ref.open()
        rule = applied(early_exit, vote, segments)
        prepared = prepare_file(path, model.card.audio, segments, rule)
        (result,) = run_model([prepared], model, vote=vote, batch_segments=default_batch_segments(model),
                              early_exit=rule)
        return result
    except Exception as e:  # noqa: BLE001 - one file's failure must not stop a library-wide run
        return error_result(_name(path), f"cannot classify: {one_line(e)}")


def _name(path) -> str:
    try:
        return os.fsdecode(path)
    except TypeError:
        return input_name(path)


class NetworkStream(WorkerStream):
    """One `TrackResult` per path, in input order, each made entirely in one of `jobs` worker
    processes (`classify_in_worker`): a `WorkerStream`, so a worker that dies is handled as in
    decoding."""

    def __init__(self, paths: Iterable[str], ref: WorkerModel, *, vote: str = "soft", segments: int | None = None,
                 jobs: int, early_exit: EarlyExit | None = None, prefetch: int | None = None) -> None:
        super().__init__(paths, jobs=jobs, prefetch=prefetch)
        self.ref, self.vote, self.segments, self.early_exit = ref, vote, segments, early_exit

    def task(self) -> tuple[Callable, tuple]:
        return classify_in_worker, (self.ref, self.vote, self.segments, self.early_exit)

    def crashed(self, path, e: BaseException) -> TrackResult:
        return error_result(_name(path), f"cannot decode: the decoder crashed ({type(e).__name__})")
