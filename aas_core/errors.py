"""Exceptions the engines raise; each message says what the user should do next."""

from __future__ import annotations


class AASError(Exception):
    """Base class for every error the product reports to a user."""


class InputError(AASError, ValueError):
    """Bad user input (file, prompt, setting): the message names the fix."""


class WeightsMissingError(AASError, FileNotFoundError):
    """A model is not in the weights folder: the message names the download command."""


class WeightsCorruptError(AASError, ValueError):
    """A model's files are present but cannot be loaded."""


class ModelLoadError(AASError, RuntimeError):
    """Intact model files that still fail to load (device error, library/config mismatch): not fixed by re-downloading."""


class StorageError(AASError, OSError):
    """A folder cannot take a write (disk full, read-only, no permission): the message names the folder and the space."""

    def __str__(self) -> str:
        # OSError(code, message) prints as "[Errno 28] message"; users read the message alone.
        return str(self.strerror) if self.strerror else super().__str__()


class BusyError(AASError):
    """Another job holds what this one needs (a story's run folder, a concept in training): wait for it or cancel it."""


class Cancelled(AASError):
    """The user cancelled a long-running job."""
