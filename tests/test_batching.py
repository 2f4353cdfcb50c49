import torch

from lib.batching import Collator, LengthBucketSampler, make_loader


def _lengths(n=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 60, (n,), generator=g).tolist()


def test_training_batches_cover_every_example_once_per_epoch():
    lengths = _lengths()
    sampler = LengthBucketSampler(lengths, batch_size=32, shuffle=True, seed=1)
    orders = []
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(lengths)))
        assert len(batches) == len(sampler) == 32  # ceil(1000 / 32)
        orders.append(flat)
    assert orders[0] != orders[1]  # reshuffled per epoch


def test_buckets_reduce_padding():
    lengths = _lengths()

    def padded(bucketing):
        sampler = LengthBucketSampler(lengths, 32, shuffle=True, seed=0, bucketing=bucketing)
        return sum(len(b) * max(lengths[i] for i in b) for b in sampler)

    assert padded(True) < 0.75 * padded(False)


def test_same_seed_and_epoch_give_the_same_order():
    a = LengthBucketSampler(_lengths(), 16, shuffle=True, seed=3)
    b = LengthBucketSampler(_lengths(), 16, shuffle=True, seed=3)
    assert list(a) == list(b)


def test_eval_loader_sorted_by_length_and_indices_restore_order():
    ids = [[1] * n for n in (5, 2, 9, 3, 7)]
    loader = make_loader(ids, [0, 1, 0, 1, 0], batch_size=2, shuffle=False, pad_id=0)
    batches = list(loader)
    assert [b["input_ids"].shape[1] for b in batches] == [3, 7, 9]  # padded to each batch's longest
    order = torch.cat([b["index"] for b in batches])
    restored = torch.empty(5, dtype=torch.long)
    restored[order] = torch.cat([b["attention_mask"].sum(1) for b in batches])
    assert restored.tolist() == [5, 2, 9, 3, 7]


def test_collator_pads_and_masks():
    batch = Collator(pad_id=7)([([1, 2, 3], 1, 0), ([4], 0, 1)])
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 7, 7]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [1, 0] and batch["index"].tolist() == [0, 1]


def test_skip_resumes_the_same_epoch_at_batch_k():
    lengths = _lengths()
    sampler = LengthBucketSampler(lengths, batch_size=32, shuffle=True, seed=5)
    sampler.set_epoch(3)
    whole = list(sampler)
    for k in (0, 1, 17, 31, 32):
        sampler.set_epoch(3, skip=k)
        assert list(sampler) == whole[k:]
    sampler.set_epoch(4, skip=0)
    assert list(sampler) != whole  # another epoch, another order: skip must not reseed
