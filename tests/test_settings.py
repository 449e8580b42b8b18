"""rnadiff.settings and the package logger: no handler at import, verbosity, lazy stderr output.

The in-process tests run under pytest, which puts its own handlers on the root logger (that is,
logging is configured); what a user sees in a bare interpreter is tested in subprocesses.
"""

import json
import logging
import subprocess
import sys

import pytest

import rnadiff
from rnadiff import settings
from rnadiff._settings import _StderrHandler

LOG = logging.getLogger("rnadiff")
CHILD = logging.getLogger("rnadiff.datasets")  # a module's logger, below the package's


def _python(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (no logging configured); stdout, stderr as text."""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def restore_level():
    level = LOG.level
    yield
    LOG.setLevel(level)


def test_settings_is_exported():
    assert "settings" in rnadiff.__all__
    assert rnadiff.settings is settings
    assert repr(settings) == f"rnadiff.settings(verbosity={settings.verbosity})"


@pytest.mark.parametrize(
    ("verbosity", "shown"),
    [
        (0, ["error"]),
        (1, ["warning", "error"]),
        (2, ["info", "warning", "error"]),
        (3, ["debug", "info", "warning", "error"]),
    ],
)
def test_verbosity_sets_what_is_shown(caplog, restore_level, verbosity, shown):
    settings.verbosity = verbosity
    assert settings.verbosity == verbosity
    caplog.clear()
    for log in (LOG, CHILD):
        for level in ("debug", "info", "warning", "error"):
            getattr(log, level)(level)
    assert [r.getMessage() for r in caplog.records if r.name == "rnadiff"] == shown
    assert [r.getMessage() for r in caplog.records if r.name == "rnadiff.datasets"] == shown


def test_verbosity_names_logger_level_and_bad_values(restore_level):
    for name, value in [("error", 0), ("warning", 1), ("INFO", 2), ("hint", 3), ("debug", 3)]:
        settings.verbosity = name
        assert settings.verbosity == value
    LOG.setLevel(logging.WARNING)  # the logger's level is the single source of truth
    assert settings.verbosity == 1
    for bad in (4, -1, True, "loud", 1.5, None):
        with pytest.raises(ValueError, match="verbosity must be"):
            settings.verbosity = bad
    assert settings.verbosity == 1


def test_configured_logging_gets_no_extra_handler(restore_level):
    # pytest's handlers on the root logger are a configuration: rnadiff adds nothing to it
    assert logging.getLogger().handlers
    settings.verbosity = 2
    LOG.info("a message")
    assert not [h for h in LOG.handlers if isinstance(h, _StderrHandler)]


def test_import_adds_no_handler_and_the_first_message_attaches_one():
    code = """
import json, logging, sys
import rnadiff
before = [len(logging.getLogger().handlers), len(logging.getLogger("rnadiff").handlers)]
logging.getLogger("rnadiff").debug("not shown at the default verbosity")
quiet = len(logging.getLogger("rnadiff").handlers)
logging.getLogger("rnadiff").info("first message")
logging.getLogger("rnadiff.datasets").info("from a module")
after = [len(logging.getLogger().handlers), len(logging.getLogger("rnadiff").handlers)]
print(json.dumps({"before": before, "quiet": quiet, "after": after}))
"""
    proc = _python(code)
    counts = json.loads(proc.stdout)
    assert counts == {"before": [0, 0], "quiet": 0, "after": [0, 1]}
    assert proc.stderr.splitlines() == ["first message", "from a module"]


def test_verbosity_in_a_fresh_interpreter():
    code = """
import logging, rnadiff
rnadiff.settings.verbosity = 1
assert len(logging.getLogger("rnadiff").handlers) == 1  # attached when set
logging.getLogger("rnadiff").info("hidden")
logging.getLogger("rnadiff").warning("shown")
rnadiff.settings.verbosity = 3
logging.getLogger("rnadiff").debug("detail")
"""
    assert _python(code).stderr.splitlines() == ["shown", "detail"]


def test_user_configured_logging_shows_each_message_once():
    code = """
import logging, sys
logging.basicConfig(stream=sys.stdout, format="user %(name)s %(message)s", level=logging.INFO)
import rnadiff
logging.getLogger("rnadiff").info("one")
assert not logging.getLogger("rnadiff").handlers
"""
    proc = _python(code)
    assert proc.stdout.splitlines() == ["user rnadiff one"] and proc.stderr == ""
    # configured after rnadiff attached its handler: the user's handler takes over
    code = """
import logging, sys
import rnadiff
logging.getLogger("rnadiff").info("before")
logging.basicConfig(stream=sys.stdout, format="user %(message)s")
logging.getLogger("rnadiff").info("after")
"""
    proc = _python(code)
    assert proc.stderr.splitlines() == ["before"]
    assert proc.stdout.splitlines() == ["user after"]


def test_a_level_set_before_import_is_kept():
    code = """
import logging
logging.getLogger("rnadiff").setLevel(logging.ERROR)
import rnadiff
assert rnadiff.settings.verbosity == 0
logging.getLogger("rnadiff").warning("hidden")
"""
    assert _python(code).stderr == ""
