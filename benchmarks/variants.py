"""The variants the benchmark compares. Each one: fresh copy of the same starting weights,
``steps`` optimiser steps on the same training titles, then one inference pass over the same
validation titles (timed, and scored for accuracy).

* ours        lib.loop.train / lib.loop.predict with our loaders: length buckets + dynamic padding;
              its inference also timed through the pyfunc model that training logs
              (mlflow.pyfunc.load_model(...).predict on a DataFrame of titles: tokenizing included)
* hf_trainer  transformers.Trainer + DataCollatorWithPadding, its usual setup (random batches
              padded to their own longest, fused AdamW, no evaluation while training)
* hf_trainer_grouped  the same with the Trainer's own length grouping
              (train_sampling_strategy="group_by_length"): its strongest fp32 setting
* hf_trainer_bf16     hf_trainer_grouped with bf16=True (skipped on a CPU without native bf16,
              where it is emulated and ~30x slower)
* pad_to_max  the original approach: our loop, random batches, every batch padded to max_length
* ours_alt    ours again at another precision (bf16 on CPU)
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import transformers
from omegaconf import OmegaConf

from lib.batching import make_loader
from lib.device import cpu_bf16_flag
from lib.loop import TrainingParts, predict, train
from lib.metrics import compute_metrics
from lib.optim import build_optimizer, build_scheduler


@dataclass
class Setup:
    """Everything the variants share, built once: config, weights, tokenized titles."""

    cfg: object
    device: torch.device
    precision: str
    base_model: torch.nn.Module  # starting weights, kept on the CPU; every run trains a deep copy
    tokenizer: object
    train_ids: list[list[int]]
    train_labels: list[int]
    val_ids: list[list[int]]
    val_labels: list[int]
    val_texts: list[str]  # the same titles as text, for the pyfunc model (it tokenizes itself)
    loss_fn: torch.nn.Module
    max_length: int  # truncation of every variant, and the width pad_to_max pads to

    @property
    def batch_size(self) -> int:
        return self.cfg.trainer.batch_size

    @property
    def eval_batch_size(self) -> int:
        return self.cfg.trainer.eval_batch_size


@dataclass
class Outcome:
    train_seconds: float  # the step loop only: no set-up, no validation
    train_samples: int
    infer_seconds: float
    infer_titles: int
    accuracy: float
    f1: float
    padded_tokens: float  # per training example: batch width, padding included
    real_tokens: float  # per training example: attention-mask ones
    pyfunc_seconds: float | None = None  # the same titles through the pyfunc model (ours only)
    pyfunc_accuracy: float | None = None  # its labels at 0.5: the same model, so the same accuracy

    def as_dict(self) -> dict:
        speeds = {
            "train_samples_per_s": self.train_samples / self.train_seconds,
            "infer_titles_per_s": self.infer_titles / self.infer_seconds,
        }
        if self.pyfunc_seconds is not None:
            speeds["pyfunc_titles_per_s"] = self.infer_titles / self.pyfunc_seconds
        return {**self.__dict__, **speeds}


class Tally:
    """Wraps a collate function and counts batch shapes: how much of the compute is padding."""

    def __init__(self, collate):
        self.collate = collate
        self.reset()

    def reset(self) -> None:
        self.samples = self.padded = self.real = 0

    def __call__(self, items):
        batch = self.collate(items)
        rows, width = batch["input_ids"].shape
        self.samples += rows
        self.padded += rows * width
        self.real += int(batch["attention_mask"].sum())
        return batch

    def per_sample(self) -> tuple[float, float]:
        return self.padded / max(self.samples, 1), self.real / max(self.samples, 1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _scores(logits: torch.Tensor | np.ndarray, labels: list[int]) -> tuple[float, float]:
    probs = torch.softmax(torch.as_tensor(logits, dtype=torch.float32), dim=-1)[:, 1].numpy()
    metrics = compute_metrics(np.asarray(labels), probs)
    return metrics["accuracy"], metrics["f1"]


def _fresh_model(setup: Setup) -> torch.nn.Module:
    return copy.deepcopy(setup.base_model).to(setup.device)


# --------------------------------------------------------------- our loop


def _loop_cfg(cfg_trainer, steps: int, batches_per_epoch: int):
    """cfg.trainer for a fixed-length run: enough epochs for ``steps``, no mid-run evaluation,
    no early stopping."""
    epochs = math.ceil(steps * cfg_trainer.grad_accum_steps / batches_per_epoch)
    return OmegaConf.merge(
        cfg_trainer,
        {"epochs": epochs, "max_steps": steps, "eval_every_steps": None, "early_stopping": {"patience": None}},
    )


def _our_loader(
    setup: Setup, ids, labels, batch_size: int, *, shuffle: bool, seed: int, bucketing: bool, pad_to: int | None
):
    """make_loader with the arguments lib.run._loaders gives it."""
    return make_loader(
        ids,
        labels,
        batch_size,
        shuffle=shuffle,
        pad_id=setup.tokenizer.pad_token_id,
        seed=seed,
        bucketing=bucketing,
        pad_to=pad_to,
        num_workers=setup.cfg.trainer.num_workers,
        pin_memory=setup.device.type == "cuda",
    )


def run_ours(
    setup: Setup,
    seed: int,
    steps: int,
    *,
    bucketing: bool = True,
    pad_to: int | None = None,
    precision: str | None = None,
    pyfunc: bool = False,
) -> Outcome:
    """lib.loop.train for ``steps`` steps, then lib.loop.predict on the validation titles (and,
    with ``pyfunc``, the pyfunc model's predict on the same titles)."""
    precision = precision or setup.precision
    transformers.set_seed(seed)  # dropout; the batch order comes from the sampler's own seed
    model = _fresh_model(setup)
    net = torch.compile(model) if setup.cfg.trainer.compile else model
    loader = _our_loader(
        setup,
        setup.train_ids,
        setup.train_labels,
        setup.batch_size,
        shuffle=True,
        seed=seed,
        bucketing=bucketing,
        pad_to=pad_to,
    )
    tally = loader.collate_fn = Tally(loader.collate_fn)
    # train() ends with a validation pass that LoopResult times separately; one batch is enough.
    probe = _our_loader(
        setup,
        setup.val_ids[: setup.eval_batch_size],
        setup.val_labels[: setup.eval_batch_size],
        setup.eval_batch_size,
        shuffle=False,
        seed=seed,
        bucketing=bucketing,
        pad_to=pad_to,
    )
    optimizer = build_optimizer(setup.cfg.schedule, net)
    scheduler = build_scheduler(setup.cfg.schedule, optimizer, steps)
    parts = TrainingParts(net, loader, probe, setup.loss_fn, optimizer, scheduler, None, setup.device, precision)
    result = train(parts, _loop_cfg(setup.cfg.trainer, steps, len(loader)), steps)
    padded, real = tally.per_sample()

    eval_loader = _our_loader(
        setup,
        setup.val_ids,
        setup.val_labels,
        setup.eval_batch_size,
        shuffle=False,
        seed=seed,
        bucketing=bucketing,
        pad_to=pad_to,
    )
    _sync(setup.device)
    start = time.perf_counter()
    logits = predict(net, eval_loader, setup.device, precision)
    _sync(setup.device)
    infer_seconds = time.perf_counter() - start
    accuracy, f1 = _scores(logits, setup.val_labels)
    return Outcome(
        result.train_seconds - result.eval_seconds,
        result.train_samples,
        infer_seconds,
        len(setup.val_ids),
        accuracy,
        f1,
        padded,
        real,
        *(_time_pyfunc(setup, model, precision) if pyfunc else ()),
    )


def _time_pyfunc(setup: Setup, model, precision: str) -> tuple[float, float]:
    """Seconds of mlflow.pyfunc.load_model(...).predict on the validation titles, the model saved as
    training logs it (lib/pyfunc.py), loading not timed, at the row's precision (fp32 where the
    pyfunc model has no such option) and batch size; and the accuracy of its labels."""
    import mlflow
    import pandas as pd

    from lib.pyfunc import PRECISIONS, save_model_folder, save_pyfunc_model

    with tempfile.TemporaryDirectory(prefix="bench-pyfunc-") as folder:
        hf_folder = save_model_folder(Path(folder) / "hf", model, setup.tokenizer, 0.5, setup.max_length)
        save_pyfunc_model(hf_folder, Path(folder) / "pyfunc")
        loaded = mlflow.pyfunc.load_model(str(Path(folder) / "pyfunc"))
        titles = pd.DataFrame({"title": setup.val_texts})
        _sync(setup.device)
        start = time.perf_counter()
        params = {"precision": precision if precision in PRECISIONS else "fp32", "batch_size": setup.eval_batch_size}
        predicted = loaded.predict(titles, params=params)
        _sync(setup.device)
        seconds = time.perf_counter() - start
    return seconds, float(np.mean(predicted["label"].to_numpy() == np.asarray(setup.val_labels)))


# --------------------------------------------------------------- Hugging Face Trainer


class Encoded(torch.utils.data.Dataset):
    """Pre-tokenized titles as the dicts DataCollatorWithPadding expects (what datasets.map gives)."""

    def __init__(self, ids: list[list[int]], labels: list[int] | None = None):
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        item = {"input_ids": self.ids[i], "attention_mask": [1] * len(self.ids[i])}
        if self.labels is not None:
            item["labels"] = self.labels[i]
        return item


def _clock_callback():
    """A TrainerCallback timing on_train_begin -> on_train_end: the step loop, without the
    Trainer's own set-up (accelerate, optimizer creation), to match LoopResult's timing."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        seconds = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            _sync(torch.device(args.device))
            self.seconds = time.perf_counter() - self.start

    return Clock()


def _warmup_steps(cfg_schedule, steps: int) -> int:
    """The warm-up length lib.optim gives our loop (warmup_ratio or warmup_steps), read off a
    throwaway scheduler so the Trainer warms up over exactly as many steps."""
    scheduler = build_scheduler(cfg_schedule, torch.optim.SGD([torch.zeros(1)], lr=1.0), steps)
    return scheduler.lr_lambdas[0].warmup_steps


def trainer_arguments(setup: Setup, seed: int, steps: int, output_dir: str, precision: str, sampling: str = "random"):
    """TrainingArguments matching the project's recipe (batch size, lr, AdamW weight decay,
    warm-up + schedule, clipping, precision); everything else at the Trainer's defaults (fused
    AdamW; eval_strategy='no'), its batch sampler ``sampling`` ("random", its default, or
    "group_by_length")."""
    from transformers import TrainingArguments

    cfg = setup.cfg
    schedule = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[cfg.schedule.name]
    return TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=setup.batch_size,
        per_device_eval_batch_size=setup.eval_batch_size,
        gradient_accumulation_steps=cfg.trainer.grad_accum_steps,
        max_steps=steps,
        learning_rate=float(cfg.schedule.lr),
        weight_decay=float(cfg.schedule.weight_decay),
        warmup_steps=_warmup_steps(cfg.schedule, steps),
        lr_scheduler_type=schedule,
        max_grad_norm=cfg.trainer.max_grad_norm or 0.0,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=setup.device.type == "cpu",
        seed=seed,
        logging_steps=cfg.trainer.log_every_steps,
        save_strategy="no",
        report_to="none",
        dataloader_num_workers=cfg.trainer.num_workers,
        torch_compile=bool(cfg.trainer.compile),
        train_sampling_strategy=sampling,
    )


def _samples_in(batches: int, rows: int, batch_size: int) -> int:
    """Examples in the first ``batches`` batches of epochs whose last batch is the partial one
    (the Trainer's random sampler, drop_last=False)."""
    epochs, rest = divmod(batches, math.ceil(rows / batch_size))
    return epochs * rows + min(rest * batch_size, rows)


def run_hf_trainer(
    setup: Setup, seed: int, steps: int, sampling: str = "random", precision: str | None = None
) -> Outcome:
    """Trainer.train for ``steps`` steps, then Trainer.predict on the validation titles."""
    from transformers import DataCollatorWithPadding, Trainer

    threads = torch.get_num_threads()
    tally = Tally(DataCollatorWithPadding(setup.tokenizer))
    clock = _clock_callback()
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as output_dir:
        trainer = Trainer(
            model=_fresh_model(setup),
            args=trainer_arguments(setup, seed, steps, output_dir, precision or setup.precision, sampling),
            train_dataset=Encoded(setup.train_ids, setup.train_labels),
            data_collator=tally,
            processing_class=setup.tokenizer,
            callbacks=[clock],
        )
        torch.set_num_threads(threads)  # the same threads as every other variant, whatever accelerate did
        trainer.train()
        batches = trainer.state.global_step * setup.cfg.trainer.grad_accum_steps
        samples = _samples_in(batches, len(setup.train_ids), setup.batch_size)
        # accelerate's loader fetches one batch ahead, so the tally may hold one extra batch:
        # fine for the average width, not for the sample count.
        padded, real = tally.per_sample()
        start = time.perf_counter()
        output = trainer.predict(Encoded(setup.val_ids))
        infer_seconds = time.perf_counter() - start
    accuracy, f1 = _scores(output.predictions, setup.val_labels)
    return Outcome(clock.seconds, samples, infer_seconds, len(setup.val_ids), accuracy, f1, padded, real)


# --------------------------------------------------------------- the registry


def variants(setup: Setup, names: list[str], alt_precision: str | None) -> dict:
    """{name: (label, run(seed, steps) -> Outcome)} for the names asked for, in order."""
    table = {
        "ours": ("ours", lambda seed, steps: run_ours(setup, seed, steps, pyfunc=setup.cfg.bench.pyfunc)),
        "hf_trainer": ("hf_trainer", lambda seed, steps: run_hf_trainer(setup, seed, steps)),
        "hf_trainer_grouped": (
            "hf_trainer_grouped",
            lambda seed, steps: run_hf_trainer(setup, seed, steps, sampling="group_by_length"),
        ),
        "hf_trainer_bf16": (
            "hf_trainer_bf16",
            lambda seed, steps: run_hf_trainer(setup, seed, steps, sampling="group_by_length", precision="bf16"),
        ),
        "pad_to_max": (
            f"pad_to_{setup.max_length}",
            lambda seed, steps: run_ours(setup, seed, steps, bucketing=False, pad_to=setup.max_length),
        ),
    }
    if alt_precision and alt_precision != setup.precision:
        table["ours_alt"] = (
            f"ours_{alt_precision}",
            lambda seed, steps: run_ours(setup, seed, steps, precision=alt_precision),
        )
    unknown = set(names) - {*table, "ours_alt"}
    if unknown:
        known = ", ".join(sorted({*table, "ours_alt"}))
        raise ValueError(f"bench.variants: unknown {sorted(unknown)}; choose from {known}")
    if setup.device.type == "cpu" and cpu_bf16_flag() is None:  # emulated bf16: ~30x slower, not worth timing
        for name in [n for n in names if n == "hf_trainer_bf16" or (n == "ours_alt" and alt_precision == "bf16")]:
            print(f"skipping {name}: this CPU has no native bf16 (AMX / AVX-512 BF16); emulated it is ~30x slower")
            table.pop(name, None)
    return {name: table[name] for name in names if name in table}
