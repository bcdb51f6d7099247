"""Errors that carry a sentence meant for the user (no traceback needed)."""


class SSLStudioError(Exception):
    """Base class: ``str(error)`` is a complete sentence a user can act on."""


class DataError(SSLStudioError):
    """The images or folders given cannot be used (missing, empty, unreadable, one class...)."""


class ConfigError(SSLStudioError):
    """A setting is out of range or a combination of settings cannot work."""


class UntrustedCodeError(ConfigError):
    """A file is a program (a TorchScript archive), not weights: it is loaded only when marked as trusted."""


class RunBusyError(SSLStudioError):
    """Another job holds the run folder (its lock file names the process)."""


class WeightsUnavailableError(SSLStudioError):
    """Pretrained weights are not on this machine and cannot be downloaded."""


class RunError(SSLStudioError):
    """A run directory is missing, incomplete or from an incompatible version."""


class JobError(SSLStudioError):
    """A job started and then failed (the disk filled up, the loss diverged): the command line exits
    with status 1 rather than the 2 of bad input."""
