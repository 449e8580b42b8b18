"""Exceptions raised by rnadiff.

Every error a user can trigger with bad input is an :class:`InputError` (a ``ValueError``) with a
message that names the offending column, gene, value or file, so that it never surfaces as a
traceback from deep inside torch.
"""


class RNADiffError(Exception):
    """Base class of all rnadiff errors."""


class InputError(RNADiffError, ValueError):
    """The user's data, arguments or files are not usable as given."""


class DatasetError(RNADiffError):
    """A registered dataset could not be found, downloaded or verified."""
