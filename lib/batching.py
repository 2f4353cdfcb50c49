"""Texts -> batches: tokenize once up front, group similar lengths, pad each batch to its own longest.

Titles are 10-25 word pieces; padding every batch to max_length (64-128) wastes most of the
compute, so batches are built from examples of similar length. Training shuffles whole batches;
evaluation walks the examples sorted by length and every batch carries the original row
indices, so predictions can be put back in input order.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Sampler

# Training batches are drawn from pools of this many batches' worth of examples, sorted by length
# inside the pool: batches stay near-uniform in length while epochs still differ.
POOL_BATCHES = 50


def encode(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids of every text, truncated to ``max_length``, without padding."""
    return tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)["input_ids"]


class LengthBucketSampler(Sampler[list[int]]):
    """Yields lists of indices, each a batch of examples of similar length.

    ``shuffle=True`` (training): shuffle, sort within pools of POOL_BATCHES batches, shuffle the
    batch order; reseeded by ``set_epoch``. ``shuffle=False`` (evaluation): sorted by length.
    ``bucketing=False`` gives plain (shuffled or sequential) batches, for comparison.
    """

    def __init__(self, lengths: list[int], batch_size: int, shuffle: bool, seed: int = 0, bucketing: bool = True):
        self.lengths, self.batch_size, self.shuffle = lengths, batch_size, shuffle
        self.seed, self.bucketing, self.epoch, self.skip = seed, bucketing, 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Reseed for ``epoch``; the next pass starts at batch ``skip`` (resuming mid-epoch)."""
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def _chunks(self, order: list[int]) -> list[list[int]]:
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches()[self.skip :])

    def _batches(self) -> list[list[int]]:
        order = list(range(len(self.lengths)))
        rng = random.Random(self.seed * 100_003 + self.epoch)
        if not self.shuffle:
            if self.bucketing:
                order.sort(key=lambda i: self.lengths[i])
            return self._chunks(order)
        rng.shuffle(order)
        if not self.bucketing:
            return self._chunks(order)
        pool = self.batch_size * POOL_BATCHES
        batches = []
        for start in range(0, len(order), pool):
            chunk = sorted(order[start : start + pool], key=lambda i: self.lengths[i])
            batches.extend(self._chunks(chunk))
        rng.shuffle(batches)
        return batches


class Collator:
    """Pads a list of (ids, label, index) to the longest in the batch (or to ``pad_to``). With
    ``per_row`` (tensors with one row per example, e.g. a teacher's logits and embeddings: distillation,
    lib/distill.py) each batch carries its rows' of each, under the same names."""

    def __init__(self, pad_id: int, pad_to: int | None = None, per_row: dict[str, torch.Tensor] | None = None):
        self.pad_id, self.pad_to, self.per_row = pad_id, pad_to, per_row or {}

    def __call__(self, items: list[tuple[list[int], int, int]]) -> dict[str, torch.Tensor]:
        width = self.pad_to or max(len(ids) for ids, _, _ in items)
        input_ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, (ids, _, _) in enumerate(items):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": torch.tensor([label for _, label, _ in items], dtype=torch.long),
            "index": torch.tensor([index for _, _, index in items], dtype=torch.long),
        }
        for name, values in self.per_row.items():
            batch[name] = values[batch["index"]]
        return batch


def make_loader(
    token_ids: list[list[int]],
    labels: list[int],
    batch_size: int,
    *,
    shuffle: bool,
    pad_id: int,
    seed: int = 0,
    bucketing: bool = True,
    pad_to: int | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
    per_row: dict[str, torch.Tensor] | None = None,
) -> DataLoader:
    """A DataLoader over pre-tokenized examples; its ``batch_sampler`` has ``set_epoch``. Batches carry
    ``values[index]`` under ``name`` for each of ``per_row``'s tensors."""
    items = [(ids, int(label), index) for index, (ids, label) in enumerate(zip(token_ids, labels))]
    sampler = LengthBucketSampler([len(ids) for ids in token_ids], batch_size, shuffle, seed, bucketing)
    # Its own generator: a DataLoader draws a seed from the global RNG for every new iterator, which
    # would shift the dropout masks after an evaluation or a resume from a checkpoint.
    return DataLoader(
        items,
        batch_sampler=sampler,
        collate_fn=Collator(pad_id, pad_to, per_row),
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
    )
