"""The project's own errors: what a user did wrong, as opposed to a bug.

Every error a user can cause (a bad argument, a bad checkpoint, a bad image, a bad workload, a device
that is not there) derives from `GenfoundryError`. The CLI turns these into one line on stderr and exit
code 2 (`genfoundry --debug ...` shows the traceback); any other exception is a bug and keeps its
traceback. The messages name what was wrong and what was expected.

The concrete classes also derive from `ValueError` (or `RuntimeError`) so callers that caught those
before keep working.
"""

from __future__ import annotations


class GenfoundryError(Exception):
    """Base of every error a user can cause."""


class InputError(GenfoundryError, ValueError):
    """An argument, option or input value is out of range or of the wrong kind."""


class DeviceError(InputError):
    """A device was asked for that this machine does not have or cannot run the request on."""


def one_line(err: BaseException) -> str:
    """The error's message on one line (multi-line messages joined with '; ')."""
    text = str(err).strip() or type(err).__name__
    parts = [p.strip() for p in text.splitlines() if p.strip()]
    return "; ".join(parts)
