"""A content-addressed image store: files named by the SHA-256 of their bytes, under a two-hex-digit shard.

Layout: `root/ab/<sha>.<ext>`, `ab` being the first two digits of the sha. The extension is kept so the
files are easy to browse and serve; lookups find a sha's file by globbing `<sha>.*` in its shard.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Final

__all__ = ["ImageStore"]

_SHA_RE: Final = re.compile(r"[0-9a-f]{64}")
_EXT_RE: Final = re.compile(r"[a-z0-9]{1,10}")


class ImageStore:
    """Bytes in, sha256 hex out; the same bytes are stored once, whatever extension a later put gives."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def put(self, data: bytes, ext: str) -> str:
        """Store `data` as `<sha>.<ext>` (atomically) and return its sha; a duplicate writes nothing."""
        ext = _check_ext(ext)
        sha = hashlib.sha256(data).hexdigest()
        if self._find(sha) is not None:
            return sha
        shard = self.root / sha[:2]
        shard.mkdir(parents=True, exist_ok=True)
        # Write to a hidden temp file in the same directory, then rename: readers never see a partial
        # file, and a crash leaves only a `.tmp` that no `<sha>.*` glob matches.
        fd, tmp_name = tempfile.mkstemp(dir=shard, prefix=f".{sha}.", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, shard / f"{sha}.{ext}")
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return sha

    def path(self, sha: str) -> Path:
        """The file holding `sha`; KeyError if absent, ValueError if `sha` is not 64 lowercase hex digits."""
        found = self._find(sha)
        if found is None:
            raise KeyError(sha)
        return found

    def get(self, sha: str) -> bytes:
        """The stored bytes of `sha`; KeyError if absent."""
        return self.path(sha).read_bytes()

    def delete(self, sha: str) -> bool:
        """Remove `sha`'s file; True if something was removed. The (possibly empty) shard directory stays,
        so a concurrent put into it cannot lose its directory."""
        _check_sha(sha)
        removed = False
        for candidate in self._candidates(sha):
            with contextlib.suppress(FileNotFoundError):
                candidate.unlink()
                removed = True
        return removed

    def exists(self, sha: str) -> bool:
        """Whether `sha` is stored; ValueError if `sha` is malformed."""
        return self._find(sha) is not None

    def _candidates(self, sha: str) -> list[Path]:
        shard = self.root / sha[:2]
        # `sha` is validated hex, so it contains no glob metacharacters or path separators.
        return sorted(p for p in shard.glob(f"{sha}.*") if p.is_file())

    def _find(self, sha: str) -> Path | None:
        _check_sha(sha)
        candidates = self._candidates(sha)
        return candidates[0] if candidates else None


def _check_sha(sha: str) -> None:
    # The sha becomes part of a path: only the exact hex form is allowed, which rules out traversal.
    if not isinstance(sha, str) or _SHA_RE.fullmatch(sha) is None:
        raise ValueError(f"not a sha256 hex digest: {sha!r}")


def _check_ext(ext: str) -> str:
    """A bare lowercase extension such as "jpg"; a leading dot is dropped."""
    bare = ext.lower().removeprefix(".")
    if _EXT_RE.fullmatch(bare) is None:
        raise ValueError(f"not a file extension: {ext!r}")
    return bare
