"""Pre-download the hub models of conf/model/ for machines without internet.

    python experiments/download_models.py                      # every hub model into the HF cache
    python experiments/download_models.py model=scibert,bert   # some of them
    python experiments/download_models.py model=roberta to=/shared/models
        # plain folders /shared/models/roberta, then: train.py model=roberta model.pretrained=/shared/models/roberta

Copy ~/.cache/huggingface (or the `to=` folders) to the offline machine afterwards.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402

from lib.cli import HELP_FLAGS, help_text  # noqa: E402
from lib.errors import ConfigError, exit_on_user_error  # noqa: E402
from lib.models import download_hub_model, hub_models  # noqa: E402
from lib.paths import CONF_DIR  # noqa: E402

USAGE = "download_models.py [model=NAME[,NAME...]] [to=DIR]"
OPTIONS = {
    "model": "hub model options of conf/model/ to fetch (default: every one)",
    "to": "save plain model folders under DIR/<name> (default: the Hugging Face cache)",
}


def parse(args: list[str]) -> dict[str, str]:
    if any(a in HELP_FLAGS for a in args):
        print(help_text(USAGE, OPTIONS, __doc__))
        raise SystemExit(0)
    options = dict(arg.split("=", 1) for arg in args if "=" in arg)
    unknown = set(options) - {"model", "to"} | {a for a in args if "=" not in a}
    if unknown:
        raise ConfigError(f"unknown argument(s) {', '.join(sorted(unknown))}; use model=NAME[,NAME] and to=DIR")
    return options


def main(args: list[str]) -> None:
    options, available = parse(args), hub_models(CONF_DIR)
    names = options["model"].split(",") if "model" in options else list(available)
    missing = [n for n in names if n not in available]
    if missing:
        raise ConfigError(f"model={','.join(missing)}: not a hub model option; choose from {', '.join(available)}")
    console = Console()
    for name in names:
        target = Path(options["to"]) / name if "to" in options else None
        with console.status(f"downloading {available[name]}"):
            folder = download_hub_model(available[name], target)
        console.print(f"[green]ok[/] model={name}: {available[name]} -> {folder}")


if __name__ == "__main__":
    with exit_on_user_error():
        main(sys.argv[1:])
