"""Database errors the CLI and operator turn into one clear line or a retry."""


class DatabaseError(RuntimeError):
    """Base class: the message is one line a person can act on."""


class InvalidDatabaseUrlError(DatabaseError):
    """The URL cannot be parsed or names a driver we do not support."""


class DatabaseUnavailableError(DatabaseError):
    """The server cannot be reached or refused us; retrying later may help."""


class SchemaMismatchError(DatabaseError):
    """The database's schema revision is not one this code knows (newer code ran against it)."""
