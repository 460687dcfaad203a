"""Secrets stay out of logs: read from the environment or secret files, and blotted out of every log line.

Tokens and secrets come from the environment (`LIKENESS_DISCORD_TOKEN`, …) or, for orchestrators that
mount secrets as files (Docker and Kubernetes secrets, systemd credentials), from a file named by the same
variable with `_FILE` appended (`LIKENESS_DISCORD_TOKEN_FILE=/run/secrets/discord_token`).

Whatever is secret in the loaded settings (the tokens, the signing secret, the password in the Redis URL)
is registered with `SECRETS`, a logging filter on the console handler: a log line that would carry one —
in its message, its arguments or a traceback — shows `[secret]` instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, MutableMapping
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

from bot.errors import UserError

FILE_SUFFIX = "_FILE"
SHOWN = "[secret]"
SHORTEST = 6  # shorter values are not treated as secrets: blotting "abc" everywhere would garble the logs


class SecretFileUnreadable(UserError):
    """A `…_FILE` variable names a file that cannot be read."""


def read_secret_files(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """For each `NAME_FILE` variable whose `NAME` is not set itself, set `NAME` to the file's content
    (surrounding whitespace removed). Returns the names set. Only LIKENESS_*, DISCORD_* and SLACK_* names
    are read, so unrelated `_FILE` variables of the environment stay untouched."""
    environ = os.environ if environ is None else environ
    done = []
    for variable, path in list(environ.items()):
        name = variable.removesuffix(FILE_SUFFIX)
        if name == variable or not name.startswith(("LIKENESS_", "DISCORD_", "SLACK_")) or name in environ:
            continue
        try:
            environ[name] = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretFileUnreadable(
                f"{variable} names {path!r}, which cannot be read ({type(exc).__name__}); point it at a "
                f"readable file, or set {name} itself"
            ) from exc
        done.append(name)
    return done


def secrets_of(settings: BaseModel) -> list[str]:
    """The secret values in `settings`: every SecretStr field, and the password of any URL field."""
    found = []
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value().strip())
        elif isinstance(value, str) and "://" in value:
            try:
                password = urlsplit(value).password
            except ValueError:
                continue
            if password:
                found.append(password)
    return [secret for secret in found if len(secret) >= SHORTEST]


class RedactSecrets(logging.Filter):
    """A handler filter that replaces every registered secret in a record (message, arguments, traceback)
    with `[secret]`. The record is rewritten once, so every handler after this one sees it redacted."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()

    def add(self, secrets: Iterable[str]) -> None:
        self._secrets.update(s for s in secrets if len(s) >= SHORTEST)

    def redact(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, SHOWN)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        redacted = self.redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
            record.exc_info = None  # the redacted text stands in for it
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        return True


SECRETS = RedactSecrets()  # on the console handler of every `likeness` command
