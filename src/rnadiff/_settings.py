"""Package settings, after scanpy's ``sc.settings``: ``rnadiff.settings.verbosity``.

rnadiff says what it detects and decides (input type, genes, training length) through the
``rnadiff`` logger. Importing rnadiff configures no logging: that logger gets a level (INFO,
unless it has one) and a filter, never a handler. A stderr handler (bare messages) is attached
to it lazily, the first time rnadiff logs a record that passes the level or when
``settings.verbosity`` is set, and only if logging is not configured, i.e. no handler would
receive rnadiff's records (``logging.basicConfig``, Jupyter set-ups and pytest add one to the
root logger). If logging is configured later, the handler stays silent, so nothing is shown twice.
"""

from __future__ import annotations

import logging
import sys
from numbers import Integral

logger = logging.getLogger("rnadiff")

# verbosity -> level of the ``rnadiff`` logger; scanpy's names, "hint" is DEBUG here
VERBOSITY_LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}
_VERBOSITY_NAMES = {"error": 0, "warning": 1, "info": 2, "hint": 3, "debug": 3}


class _StderrHandler(logging.StreamHandler):
    """Bare messages to whatever ``sys.stderr`` is when a record comes (Jupyter and pytest
    replace it after import)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):
        return sys.stderr

    def handle(self, record: logging.LogRecord) -> bool:
        if _logging_configured():  # configured after this was attached: theirs shows it
            return False
        return super().handle(record)


def _logging_configured() -> bool:
    """Whether a handler other than rnadiff's own would receive the ``rnadiff`` logger's records."""
    log: logging.Logger | None = logger
    while log is not None:
        if any(not isinstance(h, _StderrHandler) for h in log.handlers):
            return True
        log = log.parent if log.propagate else None
    return False


def _attach_handler() -> None:
    attached = any(isinstance(h, _StderrHandler) for h in logger.handlers)
    if not attached and not _logging_configured():
        logger.addHandler(_StderrHandler())


def _attach_on_first_record(record: logging.LogRecord) -> bool:
    """Logger filter: rnadiff has something to say, make sure it can be seen; lets it pass."""
    _attach_handler()
    return True


def watch_loggers() -> None:
    """Attach the handler lazily for the ``rnadiff`` logger and every ``rnadiff.*`` logger that
    exists (a child's records reach the parent's handlers, but not the parent's filters)."""
    loggers = [logger] + [
        log
        for name, log in logging.Logger.manager.loggerDict.items()
        if name.startswith("rnadiff.") and isinstance(log, logging.Logger)
    ]
    for log in loggers:
        if _attach_on_first_record not in log.filters:
            log.addFilter(_attach_on_first_record)


class Settings:
    """rnadiff's settings: ``rnadiff.settings``.

    Examples
    --------
    >>> import rnadiff
    >>> rnadiff.settings.verbosity = 1  # warnings and errors only
    """

    @property
    def verbosity(self) -> int:
        """What rnadiff reports: 0 errors, 1 warnings, 2 information (default), 3 hints and
        debugging details.

        Setting it (an int, or ``"error"``, ``"warning"``, ``"info"``, ``"hint"``, ``"debug"``)
        sets the level of the ``rnadiff`` logger to ERROR, WARNING, INFO or DEBUG and attaches
        the stderr handler unless logging is configured. Reading it reads that level, so
        ``logging.getLogger("rnadiff").setLevel(...)`` shows here too.
        """
        level = logger.getEffectiveLevel()
        return next((v for v in (3, 2, 1) if level <= VERBOSITY_LEVELS[v]), 0)

    @verbosity.setter
    def verbosity(self, value: int | str) -> None:
        v = _VERBOSITY_NAMES.get(value.lower(), value) if isinstance(value, str) else value
        if isinstance(v, bool) or not isinstance(v, Integral) or v not in VERBOSITY_LEVELS:
            raise ValueError(
                f"verbosity must be 0, 1, 2, 3 or one of {sorted(_VERBOSITY_NAMES)}, got {value!r}"
            )
        logger.setLevel(VERBOSITY_LEVELS[int(v)])
        _attach_handler()

    def __repr__(self) -> str:
        return f"rnadiff.settings(verbosity={self.verbosity})"


if logger.level == logging.NOTSET:  # a level the user set before importing rnadiff stays
    logger.setLevel(VERBOSITY_LEVELS[2])
watch_loggers()
settings = Settings()
