"""Exceptions the exporter raises for problems a user can fix (the CLI prints them and exits 2)."""


class ConfigError(ValueError):
    """Invalid configuration: the message names the variable (or flag), the bad value and what is allowed."""


class ModelError(ValueError):
    """A model id or directory that cannot be used: the message says which file or cache entry is missing."""
