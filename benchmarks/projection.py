"""ESTIMATE of the wall time of the five original experiments (SEED_NOTES.md: bert-base-sized
models, 232,402 titles, 5 epochs, batch 32) from CPU measurements of a bert-base-sized model.

Not a measurement of those runs: a randomly initialised BERT of bert-base shape (12 layers,
hidden 768, the MiniLM/bert-base-uncased vocabulary) is timed for a few training steps and one
inference pass per padding mode, on this corpus's titles; the per-title costs are then
multiplied out. SciBERT/RoBERTa/DeBERTa tokenizers and the CiteSeer titles give other lengths,
DeBERTa's attention costs more, early stopping may end runs sooner, and a GPU has different
ratios (its cost grows less with padding at these small shapes). Use it for orders of magnitude.
"""

from __future__ import annotations

import math
import time

import torch
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForSequenceClassification, BertConfig

from benchmarks.variants import Setup, _our_loader
from lib.device import autocast, to_device
from lib.errors import ConfigError
from lib.loop import predict

VAL_FRACTION = 0.1  # the original runs held 10% of the titles out for validation


def refuse_off_cpu(device: torch.device) -> None:
    """The projection times a few steps per padding mode: the steady rate on a CPU. On a GPU the first
    call of every new batch shape dominates so few steps (an H200, 2026-12-04: 137 training titles/s
    for the bucketed loop, whose shapes change every step, against 741 for pad-to-max, whose one
    shape is warm after the untimed step), so the estimate would be of warm-up, not of training."""
    if device.type != "cpu":
        raise ConfigError(
            f"bench.projection.enabled=true: the projection estimates CPU time and is refused on {device.type}; "
            "there, time the side-by-side rounds (bench.reps > 0) instead"
        )


def bert_base_sized(setup: Setup) -> torch.nn.Module:
    config = BertConfig(vocab_size=len(setup.tokenizer), num_labels=2, pad_token_id=setup.tokenizer.pad_token_id)
    return AutoModelForSequenceClassification.from_config(config).to(setup.device)


def _truncate(ids: list[list[int]], length: int) -> list[list[int]]:
    """Cut to ``length`` tokens keeping the final [SEP], as the tokenizer's truncation would."""
    return [i if len(i) <= length else i[: length - 1] + i[-1:] for i in ids]


def modes(max_lengths: list[int], dynamic_length: int) -> dict[str, dict]:
    """Padding modes to time: ours, the Trainer's (random batches padded to their longest), and
    the original pad-to-max_length at every max_length the five experiments used."""
    out = {
        "ours": {"bucketing": True, "pad_to": None, "length": dynamic_length},
        "random_dynamic": {"bucketing": False, "pad_to": None, "length": dynamic_length},
    }
    for length in sorted(set(max_lengths)):
        out[f"pad_to_{length}"] = {"bucketing": False, "pad_to": length, "length": length}
    return out


def _train_seconds_per_title(setup: Setup, model, mode: dict, steps: int) -> float:
    """The lib.loop step (autocast forward, loss, backward, clip, AdamW step) timed over
    ``steps`` steps after one untimed step; no validation, no weight snapshots."""
    ids = _truncate(setup.train_ids, mode["length"])
    loader = _our_loader(
        setup,
        ids,
        setup.train_labels,
        setup.batch_size,
        shuffle=True,
        seed=0,
        bucketing=mode["bucketing"],
        pad_to=mode["pad_to"],
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    model.train()
    batches, seen, start = iter(loader), 0, 0.0
    for step in range(steps + 1):
        if step == 1:
            start, seen = time.perf_counter(), 0
        inputs = to_device(next(batches), setup.device)
        with autocast(setup.device, setup.precision):
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        setup.loss_fn(logits.float(), inputs["labels"]).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seen += len(inputs["labels"])
    if setup.device.type == "cuda":
        torch.cuda.synchronize(setup.device)
    return (time.perf_counter() - start) / seen


def _infer_seconds_per_title(setup: Setup, model, mode: dict, titles: int) -> float:
    ids = _truncate(setup.val_ids[:titles], mode["length"])
    loader = _our_loader(
        setup,
        ids,
        setup.val_labels[:titles],
        setup.eval_batch_size,
        shuffle=False,
        seed=0,
        bucketing=mode["bucketing"],
        pad_to=mode["pad_to"],
    )
    predict(
        model,
        _our_loader(
            setup, ids[:8], setup.val_labels[:8], 8, shuffle=False, seed=0, bucketing=True, pad_to=mode["pad_to"]
        ),
        setup.device,
        setup.precision,
    )  # warm-up
    start = time.perf_counter()
    predict(model, loader, setup.device, setup.precision)
    return (time.perf_counter() - start) / len(ids)


def _hours(per_title_train: float, per_title_infer: float, cfg_projection) -> float:
    """One experiment: every epoch trains on 90% of the titles and evaluates the other 10%."""
    val = math.ceil(cfg_projection.train_titles * VAL_FRACTION)
    train = cfg_projection.train_titles - val
    return cfg_projection.epochs * (train * per_title_train + val * per_title_infer) / 3600


def project(setup: Setup, cfg_projection, threads: int) -> dict:
    model = bert_base_sized(setup)
    measured = {}
    for name, mode in modes(list(cfg_projection.max_lengths), setup.max_length).items():
        torch.set_num_threads(threads)
        train_s = _train_seconds_per_title(setup, model, mode, cfg_projection.steps)
        infer_s = _infer_seconds_per_title(setup, model, mode, cfg_projection.infer_titles)
        measured[name] = {"train_s_per_title": train_s, "infer_s_per_title": infer_s}
    approaches = {}
    for approach in ("ours", "random_dynamic", "pad_to_max_length"):
        per_exp = []
        for length in cfg_projection.max_lengths:
            m = measured[f"pad_to_{length}" if approach == "pad_to_max_length" else approach]
            per_exp.append(_hours(m["train_s_per_title"], m["infer_s_per_title"], cfg_projection))
        approaches[approach] = {"hours_per_experiment": per_exp, "hours_total": sum(per_exp)}
    return {
        "label": "ESTIMATE from CPU measurements of a randomly initialised bert-base-sized BERT; "
        "not a measurement of the five runs",
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": str(setup.device),
        "precision": setup.precision,
        "threads": threads,
        "train_titles": cfg_projection.train_titles,
        "epochs": cfg_projection.epochs,
        "max_lengths": list(cfg_projection.max_lengths),
        "measured": measured,
        "approaches": approaches,
    }


def projection_rows(projection: dict) -> list[list[str]]:
    """One row per approach: measured rates per mode, estimated hours per experiment and in all."""
    out = []
    for approach, row in projection["approaches"].items():
        modes_used = (
            [approach]
            if approach != "pad_to_max_length"
            else [f"pad_to_{n}" for n in sorted(set(projection["max_lengths"]))]
        )
        out.append(
            [
                approach,
                _rates(projection, modes_used, "train_s_per_title"),
                _rates(projection, modes_used, "infer_s_per_title"),
                " / ".join(f"{h:.0f}" for h in row["hours_per_experiment"]),
                f"{row['hours_total']:.0f}",
            ]
        )
    return out


def print_projection(projection: dict, console: Console) -> None:
    from benchmarks.report import PROJECTION_HEADERS

    table = Table(
        title=f"ESTIMATE: five original experiments, {projection['epochs']} epochs on "
        f"{projection['train_titles']:,} titles, bert-base-sized, {projection['device']} "
        f"{projection['threads']} threads"
    )
    for header in PROJECTION_HEADERS:
        table.add_column(header, justify="left" if header == "approach" else "right")
    for row in projection_rows(projection):
        table.add_row(*row)
    console.print(table)


def _rates(projection: dict, modes_used: list[str], key: str) -> str:
    """Titles per second of each mode, '/'-separated (pad_to_max_length: one per max_length)."""
    return "/".join(f"{1 / projection['measured'][m][key]:.1f}" for m in modes_used)
