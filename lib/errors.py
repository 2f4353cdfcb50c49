"""Errors a user can fix. Entry points print them as one line and exit non-zero."""


class UserError(Exception):
    """Bad input or configuration: the message alone tells the user what to change.

    Raise it with a message naming the file / field and what was expected, e.g.
    ``UserError(f"{path}: no column 'title' (columns: id, text)")``.
    """


class ConfigError(UserError):
    """An invalid or unknown configuration value."""


class DataError(UserError):
    """A data file that is missing, unreadable or unusable."""


def require_keys(cfg, group: str, keys: tuple[str, ...]) -> None:
    """Defaults live in the config group's YAML only: a key missing here is a config written by hand
    (or an old one), not a reason to invent a second default in code."""
    missing = [key for key in keys if key not in cfg]
    if missing:
        name = cfg.get("name", "<option>")
        raise ConfigError(f"{group}: {', '.join(missing)} missing (conf/{group}/{name}.yaml sets every key it needs)")


class TrainingInterrupted(Exception):
    """SIGINT / SIGTERM / SIGUSR2 arrived; the run stopped at a step boundary and saved ``path``.
    ``signal_name`` says which ("SIGUSR2": the job is to be requeued)."""

    def __init__(self, path, signal_name: str):
        super().__init__(f"{signal_name} received: checkpoint saved to {path}; resume with trainer.resume={path}")
        self.path, self.signal_name = path, signal_name


class exit_on_user_error:
    """Entry points: print a UserError as one line on stderr and exit with status 2."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and issubclass(exc_type, UserError):
            import sys

            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        return False
