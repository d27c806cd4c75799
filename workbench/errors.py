"""Exceptions that name the problem and the fix.

Every error the workbench raises on bad input derives from ``WorkbenchError`` so that the CLI
can print it as one clear line instead of a traceback.
"""


class WorkbenchError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""


class ModelNotFoundError(WorkbenchError):
    """A model spec names no known model, or its files cannot be reached."""


class FamilyError(WorkbenchError):
    """A probe or operation was given a model of a family it does not accept."""


class DataError(WorkbenchError):
    """A dataset is empty, malformed, or does not match its labels or the model."""


class SiteError(WorkbenchError):
    """A site name that the loaded model does not expose."""


class OutputExistsError(WorkbenchError):
    """An output folder already holds another run."""


class ConfigError(WorkbenchError):
    """A probe setting of the wrong type or out of range (raised when the Config is built)."""


class DeviceError(WorkbenchError):
    """A device, dtype or placement that this machine or this model cannot take."""


class ResourceError(WorkbenchError):
    """A run ran out of memory or another resource; the message says what to lower."""


def one_line(err: BaseException) -> str:
    """The first line of an underlying error, to quote inside a one-line WorkbenchError."""
    lines = str(err).strip().splitlines()
    return lines[0].strip() if lines else type(err).__name__
