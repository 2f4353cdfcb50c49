"""Checkpoints that let an interrupted run continue exactly where it stopped.

A checkpoint is one ``torch.save`` file of tensors, numbers, strings, lists and dicts only, so it
loads with ``weights_only=True``: opening a checkpoint never runs pickled code. It is written to a
temporary file and renamed, so a crash while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import random
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from lib.errors import UserError

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_TAG = "checkpoint"  # MLflow tag of an interrupted run: where its checkpoint is


# submitit's time-limit / pre-emption warning (sbatch --signal=USR2@signal_delay_s): the loop stops with
# a checkpoint like on SIGTERM, then lib/run.py hands the signal back to submitit, which requeues the job.
# (None on Windows, which has no SIGUSR2 and no SLURM.)
REQUEUE_SIGNAL = getattr(signal, "SIGUSR2", None)
STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, REQUEUE_SIGNAL) if s is not None)


def save(state: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load(path: Path) -> dict:
    if not Path(path).is_file():
        raise UserError(f"{path}: checkpoint not found")
    return torch.load(path, map_location="cpu", weights_only=True)


COMPILED_PREFIX = "_orig_mod."  # torch.compile's wrapper puts this before every parameter name


def model_state(saved: dict) -> dict:
    """A saved model state for the plain (uncompiled) model: checkpoints hold the plain names, and
    older ones written from a torch.compile wrapper are read too, so toggling trainer.compile
    between the interrupted and the resumed run does not matter."""
    return {k.removeprefix(COMPILED_PREFIX): v for k, v in saved.items()}


def rng_state() -> dict:
    """Every random stream the loop draws from (dropout, shuffling), as loadable tensors/lists."""
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]),
        "python_pos": random.getstate()[2],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class StopRequest:
    """Set by SIGINT / SIGTERM / SIGUSR2 while installed; the loop polls it between optimiser steps."""

    def __init__(self):
        self.event = threading.Event()
        self.signal_name = ""

    def __bool__(self) -> bool:
        return self.event.is_set()

    def _handle(self, signum, frame) -> None:
        if self.event.is_set() and signum == signal.SIGINT:  # a second Ctrl-C: stop right now
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        self.event.set()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (or SIGUSR2) outside the training loop (loading data, evaluating) ends the job like
    Ctrl-C does, so its MLflow run is closed KILLED instead of being left RUNNING (or FAILED by
    submitit's own SIGUSR2 handler raising in the middle of it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise_interrupt) for s in STOP_SIGNALS if s != signal.SIGINT}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Turn SIGINT / SIGTERM / SIGUSR2 into a polite stop request for the duration of training."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():  # signals only reach the main thread
        yield request
        return
    previous = {s: signal.signal(s, request._handle) for s in STOP_SIGNALS}
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
