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
from typing import get_args
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, SecretStr

from bot.errors import UserError

FILE_SUFFIX = "_FILE"
SHOWN = "[secret]"
SHORTEST = 6  # shorter values are not treated as secrets: blotting "abc" everywhere would garble the logs


class SecretFileUnreadable(UserError):
    """A `…_FILE` variable names a file that cannot be read."""


def secret_variables(kind: type[BaseModel]) -> frozenset[str]:
    """The environment variables of `kind`'s secret settings (its SecretStr fields and the Redis URL, which
    may hold a password), under each name the setting answers to."""
    names: set[str] = set()
    for name, field in kind.model_fields.items():
        annotation = field.annotation
        if annotation is not SecretStr and SecretStr not in get_args(annotation) and name != "redis_url":
            continue
        names.add(f"LIKENESS_{name.upper()}")
        if isinstance(field.validation_alias, AliasChoices):
            names.update(c for c in field.validation_alias.choices if isinstance(c, str) and c.isupper())
    return frozenset(names)


def read_secret_files(kind: type[BaseModel], environ: MutableMapping[str, str] | None = None) -> list[str]:
    """For each secret setting of `kind` (see `secret_variables`) whose variable is not set but whose
    `NAME_FILE` is, set `NAME` to the file's content (surrounding whitespace removed). Returns the names
    set. Other `_FILE` variables (`LIKENESS_MODELS_FILE` is a setting of its own) stay untouched."""
    environ = os.environ if environ is None else environ
    done = []
    for name in sorted(secret_variables(kind)):
        variable = name + FILE_SUFFIX
        path = environ.get(variable)
        if path is None or name in environ:
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
        try:
            self._rewrite(record)
        except Exception:  # a log call whose arguments do not fit its format: logging reports it itself
            return True
        return True

    def _rewrite(self, record: logging.LogRecord) -> None:
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


SECRETS = RedactSecrets()  # on the console handler of every `likeness` command
