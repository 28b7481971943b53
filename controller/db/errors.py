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


class FencedError(DatabaseError, RetryableError):
    """The operator is not (or no longer) the elected leader: its write was refused."""


class SchemaMismatchError(DatabaseError, TerminalError):
    """The database's schema revision is not one this code knows (newer code ran against it)."""


def unavailable(error: Exception) -> DatabaseUnavailableError:
    """A driver's connection error as ours, with the first line of its message."""
    original = getattr(error, "orig", None) or error
    return DatabaseUnavailableError((str(original).splitlines() or [""])[0])


class InvalidValueError(DatabaseError, TerminalError):
    """The database refused a value: too long, out of range, a NUL character, a broken rule."""


class CapacityBelowAllocationError(InvalidValueError):
    """A node's new capacity is less than what the replicas on it already hold."""


# The node CHECK constraints that keep allocation within capacity are named
# ck_nodes_<dimension>_not_overcommitted (tables.Node and the naming convention there). The
# operator's placements never break them for good (store.py re-plans); a capacity change a
# person makes can, and they are told which dimension.
_ALLOCATION_CHECK = ("ck_nodes_", "_not_overcommitted")


def refused(error: Exception, *, subject: str) -> InvalidValueError:
    """A driver's refusal of a value (IntegrityError, DataError) as one line about `subject`."""
    original = getattr(error, "orig", None) or error
    constraint = getattr(getattr(original, "diag", None), "constraint_name", None) or ""
    prefix, suffix = _ALLOCATION_CHECK
    if constraint.startswith(prefix) and constraint.endswith(suffix):
        dimension = constraint.removeprefix(prefix).removesuffix(suffix)
        return CapacityBelowAllocationError(
            f"{subject}: the new {dimension} capacity is below what its replicas hold; "
            "drain the node first (fogctl node drain) or keep the capacity"
        )
    first = (str(original).splitlines() or [""])[0]
    return InvalidValueError(f"{subject}: the database refused a value: {first}")
