"""The package logger: what rnadiff detects and decides is said, never guessed silently."""

import logging


def configure_logger() -> None:
    """Give the ``rnadiff`` logger a stderr handler at INFO, as scanpy and scvi-tools do.

    Silence it with ``logging.getLogger("rnadiff").setLevel("WARNING")``.
    """
    logger = logging.getLogger("rnadiff")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
