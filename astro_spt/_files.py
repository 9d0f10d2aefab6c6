"""Files written whole or not at all: a temporary file beside the target, renamed onto it."""

import os
import uuid
from pathlib import Path

#: What a temporary file's name holds between its random part and the target's name.
TEMPORARY_MARK = ".tmp-"


def temporary_name(path) -> Path:
    """A hidden name beside ``path`` that ends like it, for a temporary copy of it.

    It ends with ``path``'s whole name, since astropy picks a table's format and
    compression by the extension.
    """
    path = Path(path)
    return path.with_name(f".{uuid.uuid4().hex}{TEMPORARY_MARK}{path.name}")


def write_atomically(path, write) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it to ``path``.

    The file is complete, synced to disk, or not there at all: a full disk or a killed
    process leaves the old file (or none) and at most a temporary one, which
    `temporaries` finds; an error removes it.
    """
    path = Path(os.path.abspath(path))
    tmp = temporary_name(path)
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # makes the rename itself durable on POSIX; not possible (nor needed) on Windows
        _fsync(path.parent)
    except OSError:
        pass


def temporaries(folder, name_pattern: str) -> list[Path]:
    """The temporary files of `write_atomically` in ``folder`` for targets matching the
    glob ``name_pattern``."""
    return sorted(Path(folder).glob(f".*{TEMPORARY_MARK}{name_pattern}"))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
