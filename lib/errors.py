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
