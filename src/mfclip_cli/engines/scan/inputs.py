"""Turning what the user named (files, folders, globs, ``-`` for stdin) into an ordered list of
inputs.

Order is deterministic: the order given, and within a folder, names sorted. Folders are walked
recursively (unless told not to) following symbolic links that stay inside the folder named, each
real folder once, so a link loop ends; a link that leads out of it (an extraction's absolute
link) is an error entry, not followed: its target is not the evidence. A folder that cannot be
read becomes an error entry instead of stopping the run; the files a walk passes over (their
names are no picture's or video's) are counted. A file reached by several names is one input,
which carries the other names it was reached by (``InputItem.also_named``).
"""

from __future__ import annotations

import bisect
import errno
import glob
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator, TextIO

from mfclip_cli.errors import UsageError
from mfclip_cli.faces.decode import is_media
from mfclip_cli.files import GLOB_CHARS, glob_base, lies_within

LINK_LOOP = "symbolic link loop: the link never reaches a file, not followed"


class Inputs(list):
    """The inputs, in order, and the files the folder walks passed over by their names (each
    once, by its real path, however many routes reached it)."""

    def __init__(self) -> None:
        super().__init__()
        self.passed_over: set[str] = set()
        # folders named through a symbolic link: the name given, and the real folder walked
        # (its files are recorded under the name given, which stderr says)
        self.linked_folders: dict[Path, str] = {}
        # folders named (on the command line, on stdin or by a pattern) whose walk found no
        # image or video: an empty or unmounted evidence folder leaves a trace (audit Z1)
        self.folders_without_media: list[Path] = []

    @property
    def not_media(self) -> int:
        return len(self.passed_over)

    @property
    def folded(self) -> int:
        """How many other names the inputs carry (``InputItem.also_named``)."""
        return sum(len(item.also_named) for item in self)


@dataclass(frozen=True)
class InputItem:
    path: Path
    # set when the input cannot even be listed (missing, unreadable folder)
    error: str | None = None
    # the other names this input was reached by and folded into it, in the order met
    # (``collect_inputs``): a link to the file, the same file named twice, spelt otherwise
    also_named: tuple[Path, ...] = ()

    @property
    def display(self) -> str:
        return str(self.path)

    @property
    def other_names(self) -> list[str] | None:
        """``also_named`` as the records write names (``display``), None when there is none."""
        return [str(name) for name in self.also_named] or None


def _walk(
    root: Path,
    recursive: bool,
    seen_dirs: dict[str, bool],
    found: Inputs,
    ancestors: tuple[str, ...] = (),
    inside: str | None = None,
) -> Iterable[InputItem]:
    """Media files under ``root``, names sorted; a link back to a folder being walked, or out of
    ``inside`` (the real folder named; a broken one is worded as such), is an error entry; other
    files are noted in ``found.passed_over``.

    A folder reached a second time by another route (a link to a folder walked already) is skipped:
    its files are in the list once. Reached first through a link and then by its own name, it is
    walked again, for ``collect_inputs`` to keep each file under its own name.
    """
    real = os.path.realpath(root)
    inside = inside or real
    if real in ancestors:
        yield InputItem(root, f"symbolic link loop: leads back to {real}, not followed")
        return
    own_name = not _through_link(root)
    if real in seen_dirs and (seen_dirs[real] or not own_name):
        return
    seen_dirs[real] = own_name
    try:
        with os.scandir(root) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError as error:
        yield InputItem(root, f"cannot read directory: {error.strerror or error}")
        return
    for entry in entries:
        path = root / entry.name
        try:
            yield from _entry(path, entry, recursive, seen_dirs, found, (*ancestors, real), inside)
        except OSError as error:  # its kind cannot be read (a folder that is listed, not searched)
            yield InputItem(path, f"cannot read: {error.strerror or error}")


def _entry(
    path: Path,
    entry: os.DirEntry,
    recursive: bool,
    seen_dirs: dict[str, bool],
    found: Inputs,
    ancestors: tuple[str, ...],
    inside: str,
) -> Iterable[InputItem]:
    """One entry of a folder's walk (``_walk``); an OSError where its kind cannot be read (not a
    link that loops, nor an entry gone since the listing): it might be a folder of evidence."""
    try:
        is_dir = entry.is_dir(follow_symlinks=True)
        is_file = not is_dir and entry.is_file(follow_symlinks=True)
    except OSError as error:
        if error.errno not in (errno.ELOOP, errno.ENOENT):
            raise
        is_dir = is_file = False
    if (is_dir and recursive or is_media(path)) and path.exists() and _leaves(path, inside):
        yield InputItem(path, _outside_message(path))
    elif not (is_dir or is_file) and _loops(path):
        yield InputItem(path, LINK_LOOP)
    elif is_dir:
        if recursive:
            yield from _walk(path, recursive, seen_dirs, found, ancestors, inside)
    elif is_media(path):
        yield InputItem(path) if is_file else InputItem(path, not_a_file(path))
    elif is_file:
        found.passed_over.add(os.path.realpath(path))


def _leaves(path: Path, inside: str) -> bool:
    """Whether the symbolic link ``path`` leads out of the real folder ``inside``."""
    return path.is_symlink() and _outside(path, inside)


def _outside(path: Path, inside: str) -> bool:
    """Whether ``path``, links resolved, lies outside the real folder ``inside``."""
    return not lies_within(os.path.realpath(path), inside)


def _outside_message(path: Path) -> str:
    where = os.path.realpath(path)
    how = (
        f"symbolic link to {where}" if path.is_symlink() else f"through a symbolic link, at {where}"
    )
    return f"{how}, outside the folder named: not followed (name it to scan it)"


def not_a_file(path: Path) -> str:
    """Why an entry with a picture's or a video's name is not read: a folder's FIFO would block
    the scan waiting for a writer and a device might never end, so neither is opened; but the
    name is in the evidence, so the report says it was there."""
    if path.is_symlink() and not path.exists():
        return f"broken symbolic link: its target {os.readlink(path)} does not exist"
    return "not a regular file (a FIFO, socket or device): not read"


def _through_link(path: Path) -> bool:
    """Whether ``path`` reaches its file or folder through a symbolic link (its own or a
    folder's on the way)."""
    return os.path.realpath(path) != os.path.abspath(path)


def _loops(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError as error:
        return error.errno == errno.ELOOP
    return False


def collect_inputs(
    specs: Iterable[str],
    recursive: bool = True,
    stdin: TextIO | None = None,
    separator: str = "\n",
) -> Inputs:
    """Inputs in a deterministic order, each file once; ``-`` reads more paths from ``stdin``, one
    per line, or each ended by ``separator`` ("\\0" for ``find -print0``, whose names may hold a
    newline).

    A file reached by several names (a symbolic link to it, the same file named twice or spelt
    otherwise) is one input, kept under its own name (``_name_rank``) in that name's place, and
    carrying the others in ``also_named``. A name a folder's walk reached through a linked folder
    is a route, not listed there: whether a walk lists it depends on which route sorts first (a
    folder walked already is not walked again through a link)."""
    items = Inputs()
    seen_dirs: dict[str, bool] = {}  # real path: whether walked by its own name
    slots: list[InputItem | None] = []  # in the order met; a file moved on leaves None
    seen_files: dict[str, tuple[int, bool]] = {}  # real path: its slot, whether kept by a route
    inodes: dict[tuple[int, int], str] = {}  # a file of several hard links: its first real path
    named_folders: dict[Path, str] = {}  # each folder named: its real path

    def add(item: InputItem, walked: bool = False) -> None:
        # by the file it names, error or not: a FIFO a folder's walk listed is named once more;
        # a hard link is another name of its file as a symbolic link is (audit W L4)
        key = _hard_linked(item, inodes) or os.path.realpath(item.path)
        route = walked and _through_link(item.path.parent)
        if key not in seen_files:
            seen_files[key] = len(slots), route
            slots.append(item)
            return
        place, kept_by_route = seen_files[key]
        kept = slots[place]
        assert kept is not None
        if item.path == kept.path:  # the same name again (a folder and a file in it named)
            return
        if _name_rank(item.path) > _name_rank(kept.path) and (
            item.error is None or kept.error is not None
        ):
            slots[place] = None  # the file moves to its own name's place
            seen_files[key] = len(slots), route
            names = kept.also_named if kept_by_route else (kept.path, *kept.also_named)
            slots.append(replace(item, also_named=tuple(n for n in names if n != item.path)))
        elif not route:
            slots[place] = replace(kept, also_named=_with(kept.also_named, item.path))

    def expand(spec: str, inside: str | None = None, literal: bool = False) -> None:
        """``spec`` added; ``inside``: the real folder a glob that matched it searched, which a
        match reached through a link must not leave; ``literal``: a path, never a pattern."""
        if not spec:  # Path("") is the current folder: "$CASE_DIR" unset would scan it
            raise UsageError("an empty path was named (an unset shell variable?)")
        try:
            found(spec, inside, literal)
        except OSError as error:  # a folder on the way without search permission
            add(InputItem(Path(spec), f"cannot read: {error.strerror or error}"))

    def found(spec: str, inside: str | None, literal: bool) -> None:
        path = Path(spec)
        if inside is not None and path.exists() and _outside(path, inside):
            add(InputItem(path, _outside_message(path)))
        elif path.is_dir():
            if _through_link(path):
                items.linked_folders.setdefault(path, os.path.realpath(path))
            named_folders.setdefault(path, os.path.realpath(path))
            for item in _walk(path, recursive, seen_dirs, items, inside=inside):
                add(item, walked=True)
        elif path.exists() or path.is_symlink():
            add(InputItem(path))  # named explicitly: always attempted, whatever its name says
        elif GLOB_CHARS & set(spec) and not literal:
            matches = sorted(glob.glob(spec, recursive=True))
            if not matches:
                add(InputItem(path, "no file matches this pattern"))
            for match in matches:
                expand(match, glob_base(spec))
        else:
            add(InputItem(path, "no such file or directory"))

    for spec in specs:
        if spec == "-":
            if stdin is None:
                continue
            # the shell or find expanded them already: a missing "IMG[1].jpg" is missing, not
            # a pattern that scans IMG1.jpg in its place (audit Z5)
            lines = list(_stdin_paths(stdin, separator))
            split = _split_names(lines) if separator == "\n" else set()
            for index, line in enumerate(lines):
                if index in split:
                    add(InputItem(Path(line), SPLIT_NAME))
                else:
                    expand(line, literal=True)
        else:
            expand(spec)
    items.extend(item for item in slots if item is not None)
    reals = sorted(seen_files)
    names = sorted(str(name) for item in items for name in (item.path, *item.also_named))
    items.folders_without_media = [
        folder
        for folder, real in named_folders.items()
        if not _holds(reals, real) and not _holds(names, str(folder))
    ]
    return items


def _hard_linked(item: InputItem, inodes: dict[tuple[int, int], str]) -> str | None:
    """The real path under which ``inodes`` first met the file ``item`` names, where it has
    several hard links; else None, and a file of several is noted under its own real path."""
    if item.error is not None:
        return None
    try:
        status = os.stat(item.path)
    except OSError:
        return None
    if status.st_nlink < 2:
        return None
    return inodes.setdefault((status.st_dev, status.st_ino), os.path.realpath(item.path))


def _holds(paths: list[str], folder: str) -> bool:
    """Whether the sorted ``paths`` hold ``folder`` itself (an unreadable folder's error entry)
    or a path under it. Inputs are matched by their real paths (a folder named after its parent
    was walked is not empty for it) and by their names (a link in it leading out, or broken, is
    its error record, audit R F2)."""
    at = bisect.bisect_left(paths, folder)
    if at < len(paths) and paths[at] == folder:
        return True
    inside = folder.rstrip(os.sep) + os.sep
    at = bisect.bisect_left(paths, inside)
    return at < len(paths) and paths[at].startswith(inside)


def _name_rank(path: Path) -> int:
    """How much ``path`` is the name of what it reaches: its own name (no link on the way), 2; a
    link in a real folder (a loop's own name), 1; a name through a linked folder, 0."""
    if not _through_link(path):
        return 2
    return 0 if _through_link(path.parent) else 1


def _with(names: tuple[Path, ...], name: Path) -> tuple[Path, ...]:
    """``names`` and then ``name``, each once."""
    return names if name in names else (*names, name)


SPLIT_NAME = (
    "no such file or directory; it and the line after it are one name holding a newline, which "
    "a list of lines splits: list names with find -print0 | mfclip scan --null -"
)


def _split_names(lines: list[str]) -> set[int]:
    """The places of lines that are two halves of one name holding a newline (a newline-separated
    list made two "no such file" errors of it, without a word of why: audit AA L3)."""
    split: set[int] = set()
    for index, (line, following) in enumerate(zip(lines, lines[1:])):
        if not os.path.lexists(line) and os.path.lexists(f"{line}\n{following}"):
            split.update((index, index + 1))
    return split


def _stdin_paths(stdin: TextIO, separator: str) -> Iterator[str]:
    """The non-empty paths on ``stdin``: lines (a trailing carriage return dropped), or the
    pieces between ``separator`` characters, kept exactly."""
    if separator == "\n":
        for line in stdin:
            if "\0" in line:
                raise UsageError("a path on stdin holds a NUL byte: read find -print0 with --null")
            if line := line.rstrip("\r\n"):
                yield line
        return
    yield from (path for path in stdin.read().split(separator) if path)
