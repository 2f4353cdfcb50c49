"""Project locations, exposed to the configs as the ``${project_root:}`` resolver.

Importing this module registers the resolver; every entry point imports it before Hydra composes.
"""

from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = PROJECT_ROOT / "conf"

OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)
