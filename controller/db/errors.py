"""The database layer's errors, each of one kind of the taxonomy in controller/errors.py.

The db layer alone looks at SQLAlchemy's and psycopg's exceptions; it raises these instead, so
the CLI prints one line and the operator decides retries without importing a driver.
"""

from controller.errors import FogError, RetryableError, TerminalError


class DatabaseError(FogError):
    """Base class: the message is one line a person can act on."""


class InvalidDatabaseUrlError(DatabaseError, TerminalError):
    """The URL cannot be parsed or names a driver we do not support."""


class DatabaseUnavailableError(DatabaseError, RetryableError):
    """The server cannot be reached or refused us; retrying later may help."""


class WriteConflictError(DatabaseError, RetryableError):
    """Other writers kept changing what we planned on; retry the whole reconcile later."""


class SchemaMismatchError(DatabaseError, TerminalError):
    """The database's schema revision is not one this code knows (newer code ran against it)."""


def unavailable(error: Exception) -> DatabaseUnavailableError:
    """A driver's connection error as ours, with the first line of its message."""
    original = getattr(error, "orig", None) or error
    return DatabaseUnavailableError((str(original).splitlines() or [""])[0])
