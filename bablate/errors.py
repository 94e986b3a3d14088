"""The errors bablate reports to its user as one line, without a traceback.

Every layer may raise them (a model file, a config check, a run directory), so they live here,
below everything, rather than in the run infrastructure that prints them."""


class RunError(Exception):
    """A problem with the user's input or run directory, reported as one line without traceback."""


class ConfigError(RunError, ValueError):
    """A study config value that cannot work (raised by a study's ``validate(config)``)."""
