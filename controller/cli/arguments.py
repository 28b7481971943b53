"""The argument parser every `fogctl` command shares, and the value types its flags use.

Bad input must cost a person one line, never a traceback and never argparse's usage block:
the block buries the one line that says what is wrong, and `--help` shows it anyway. So the
parser prints `<command>: error: <what>` and exits with argparse's usage-error code, and every
numeric flag is parsed here, where "x", "nan", "inf" and values out of range are refused by
name before anything runs (a NaN or an infinity would otherwise reach a timedelta or the
database and fail there with a traceback).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import urllib.parse
from collections.abc import Callable
from datetime import timedelta
from typing import NoReturn, TypeVar

from controller.cli.errors import CommandError
from controller.model.addresses import Address

# argparse's exit code for a command line it cannot parse; scripts tell it apart from 1, a
# command that ran and failed.
USAGE_ERROR = 2
# The longest duration any flag may ask for: a year is far beyond any sensible interval or
# delay, and far inside what timedelta and the event loop's timers can hold (1e300 s is not).
MAX_SECONDS = 366 * 24 * 3600
# The longest a record may be asked to be kept: ten years, the longest retention laws commonly
# ask of business records; beyond it, keeping everything (no retention) is what is meant.
MAX_RETENTION_SECONDS = 3660 * 24 * 3600

N = TypeVar("N", int, float)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line; sub-command parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        """Print `<prog>: error: <message>` on one line and exit with USAGE_ERROR."""
        self.exit(USAGE_ERROR, f"{self.prog}: error: {' '.join(message.split())}\n")


def number(
    kind: type[N], *, minimum: N, inclusive: bool = True, maximum: N | None = None
) -> Callable[[str], N]:
    """An argparse type: a finite `kind` >= `minimum` (> if not `inclusive`), <= `maximum`."""
    noun = "a whole number" if kind is int else "a number"

    def parse(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {noun}: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if value < minimum or (value == minimum and not inclusive):
            bound = ">=" if inclusive else ">"
            raise argparse.ArgumentTypeError(f"must be {bound} {_shown(minimum)}, got {text}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {_shown(maximum)}, got {text}")
        return value

    # argparse names the type in its own messages ("invalid parse value") if one escapes.
    parse.__name__ = kind.__name__
    return parse


def _shown(bound: float) -> str:
    """A bound as a person writes it: 0 not 0.0, 2147483647 not 2.14748e+09."""
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def seconds(*, minimum: float = 0.0, inclusive: bool = False) -> Callable[[str], float]:
    """An argparse type for a duration in seconds: > 0 (or >= `minimum`), at most a year."""
    return number(float, minimum=minimum, inclusive=inclusive, maximum=float(MAX_SECONDS))


# Units of a DURATION (`--since 24h`, `7d`, `1h30m`): Go's and kubectl's, and days and weeks,
# which kubectl lacks but a bill is read in.
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(rf"(\d+)([{''.join(DURATION_UNITS)}])")


def duration(text: str) -> timedelta:
    """An argparse type for a duration such as 90s, 15m, 24h, 7d or 1h30m: > 0, at most a year."""
    return _duration(text, most=MAX_SECONDS)


def retention(text: str) -> timedelta:
    """An argparse type for how long records are kept (90d, 104w): > 0, at most ten years."""
    return _duration(text, most=MAX_RETENTION_SECONDS)


def _duration(text: str, *, most: int) -> timedelta:
    parts = _DURATION.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise argparse.ArgumentTypeError(
            f"not a duration like 90s, 15m, 24h, 7d or 1h30m: {text!r:.40}"
        )
    total = sum(int(number) * DURATION_UNITS[unit] for number, unit in parts)
    if not 0 < total <= most:
        raise argparse.ArgumentTypeError(
            f"must be more than 0 and at most {most // DURATION_UNITS['d']}d, got {text}"
        )
    return timedelta(seconds=total)


def namespaced_name(text: str) -> tuple[str, str]:
    """An argparse type for NAMESPACE/NAME, the way a person names one object."""
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"expected NAMESPACE/NAME, got {text!r:.80}")
    return namespace, name


# Spellings of a boolean flag value, as Go's strconv.ParseBool takes them (kubectl --watch=false).
TRUE_WORDS = {"1", "t", "T", "true", "TRUE", "True"}
FALSE_WORDS = {"0", "f", "F", "false", "FALSE", "False"}


def boolean(text: str) -> bool:
    """An argparse type for true/false, spelled as kubectl's flags accept it."""
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r:.40}")


def from_env(variable: str, parse: Callable[[str], N], fallback: N) -> N:
    """A flag's default from the environment, parsed like the flag; one line if it is bad."""
    raw = os.environ.get(variable)
    if raw is None:
        return fallback
    try:
        return parse(raw)
    except argparse.ArgumentTypeError as exc:
        raise CommandError(f"${variable}: {exc}") from None


# The highest TCP port.
MAX_PORT = 65535


def bind_address(text: str) -> Address | None:
    """An argparse type for HOST:PORT as controller-runtime reads it.

    `:8080` listens on every interface, `127.0.0.1:8080` on one, and `0` turns the endpoint
    off (controller-runtime's spelling).
    """
    if text == "0":
        return None
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or not 0 < int(port) <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"not HOST:PORT (or 0 for off): {text!r}")
    return Address(host=host.strip("[]"), port=int(port))


def http_url(text: str) -> str:
    """An argparse type for a server's base URL: http(s)://HOST[:PORT][/path], no trailing /."""
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise argparse.ArgumentTypeError(f"not an http(s)://HOST:PORT URL: {text!r:.80}")
    try:
        parsed.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad port in {text!r:.80}") from None
    return text.rstrip("/")
