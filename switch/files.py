"""Files the switch writes are its owner's only: 0600, in folders made 0700.

``switch`` sets the umask to 077 at start (switch.cli), so whatever a library makes is
private too; the functions here give the mode explicitly as well, so that a file is
private whoever calls them (a test, a library user with another umask). A folder that
already exists keeps its mode: where it lives is the operator's choice.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

PRIVATE_FILE_MODE: Final = 0o600
PRIVATE_FOLDER_MODE: Final = 0o700
PRIVATE_UMASK: Final = 0o077


def make_private_folder(folder: Path) -> None:
    """``folder`` and any missing parents, made 0700 (an existing one is left as it is)."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    for part in reversed(missing):
        try:
            part.mkdir(mode=PRIVATE_FOLDER_MODE)
        except FileExistsError:
            continue  # made meanwhile by another process
        os.chmod(part, PRIVATE_FOLDER_MODE)  # exactly 0700, whatever the umask


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_TRUNC) -> int:
    """A descriptor of ``path``, created 0600 if missing (never another mode, not even for
    a moment); an existing file is made 0600 too."""
    descriptor = os.open(path, flags | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        os.fchmod(descriptor, PRIVATE_FILE_MODE)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def write_private(path: Path, data: bytes, *, partial: Path | None = None) -> None:
    """Writes ``path`` whole, 0600: under ``partial`` (default ``.<name>.partial`` beside
    it), synced, then renamed, so a reader (or a crash) sees the old file or the new one,
    never part of it. Its folder is made 0700 if missing."""
    make_private_folder(path.parent)
    partial = partial if partial is not None else path.with_name(f".{path.name}.partial")
    descriptor = open_private(partial)
    try:
        with open(descriptor, "wb", closefd=False) as file:
            file.write(data)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(partial, path)
