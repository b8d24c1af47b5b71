"""User-facing errors: the CLI prints these as one line and exits with status 2."""


class O2OError(Exception):
    """Bad input from a user: a config value, a file, a name. Never a bug in o2o."""


class ConfigError(O2OError, ValueError):
    """An invalid hyperparameter or option."""


class DatasetError(O2OError):
    """A dataset file or directory that is missing, unreadable or malformed."""


def check(condition: bool, message: str, error: type[O2OError] = ConfigError) -> None:
    if not condition:
        raise error(message)
