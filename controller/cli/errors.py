"""The CLI's own error: a request that cannot be carried out as given; the text says why."""

from controller.errors import TerminalError


class CommandError(TerminalError):
    """Printed as one line by `fogctl`, exit code 1."""
