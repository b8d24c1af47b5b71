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


def check_positive(config: object, *names: str) -> None:
    """Each named field of ``config`` is > 0."""
    for name in names:
        value = getattr(config, name)
        check(value > 0, f"{name} must be positive, got {value}")


def check_non_negative(config: object, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        check(value >= 0, f"{name} must be non-negative, got {value}")
