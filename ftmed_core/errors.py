"""The errors ftmed raises for bad input. The CLI turns each into one line and exit code 2."""


class FtmedError(ValueError):
    """Bad input a user can fix: the message names the bad value and what would be accepted."""


class ConfigError(FtmedError):
    """An experiment or runtime setting is invalid."""


class DataError(FtmedError):
    """A data file is missing, unreadable, or fails validation."""


class RunError(FtmedError):
    """A run directory or record cannot be used (unreadable, corrupt, would be overwritten)."""
