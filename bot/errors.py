"""The one error type users see.

`UserError` carries a message fit to show as is: it names what was wrong, the value, and the fix.
Each chat adapter has exactly one handler that shows it. Anything else is a bug: it is logged with its
traceback and the user gets a short apology with an error id.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or a refused request; `str(error)` is the message for the user."""


class BadFlag(UserError):
    """A `--flag` in a command is unknown, repeated, or has a value out of bounds."""


class BadPrompt(UserError):
    """The prompt text is empty, too long, or otherwise unusable."""


class UnknownProfile(UserError):
    """`--engine NAME` names no profile in the catalog."""


class JobFailed(UserError):
    """The job ran and failed; the message carries the worker's reason."""


class JobTimedOut(UserError):
    """No result came back in time: most often, no worker serves the profile's queue."""


class GenerationRefused(UserError):
    """A button or command names a generation it cannot act on: unknown here, from another server, not
    finished, failed, or without the variation asked for."""


class NotAManager(UserError):
    """Only the server's (workspace's) managers may do this."""
