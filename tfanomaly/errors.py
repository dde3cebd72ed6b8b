"""User-facing errors.

Everything a user can get wrong (a config key, a file, a folder) raises a
:class:`UserError` whose message names the file or key and what was expected.
The CLI prints that one line and exits with code 2, without a traceback.
"""


class UserError(Exception):
    """A mistake in user input: config, data, paths. Printed as one line."""


class ConfigError(UserError):
    """A config file or override is wrong; the message names file and key path."""


class DataError(UserError):
    """An input file or folder is wrong; the message names the file."""
