"""What ``scan`` is asked to look at: order, recursion, symlink loops, unreadable folders, globs,
stdin."""

import io
import os
import shutil
from pathlib import Path

import pytest

from mfclip_cli.engines.scan.inputs import SPLIT_NAME, collect_inputs
from mfclip_cli.errors import UsageError


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_order_recursion_and_each_file_once(tmp_path):
    for name in ("b/2.png", "a/1.jpg", "a/deeper/3.mp4", "c.webp", "notes.txt"):
        _touch(tmp_path / name)
    os.symlink(tmp_path / "a", tmp_path / "z-link-to-a")  # the same folder twice: read once
    names = [
        item.path.relative_to(tmp_path).as_posix()
        for item in collect_inputs([str(tmp_path), str(tmp_path / "c.webp")])
    ]
    assert names == ["a/1.jpg", "a/deeper/3.mp4", "b/2.png", "c.webp"]
    flat = [item.path.name for item in collect_inputs([str(tmp_path)], recursive=False)]
    assert flat == ["c.webp"]
    # a link sorted before the file it names: the file is kept, under its own name
    os.symlink(tmp_path / "c.webp", tmp_path / "0-alias.webp")
    flat = [item.path.name for item in collect_inputs([str(tmp_path)], recursive=False)]
    assert flat == ["c.webp"]
    alone = collect_inputs([str(tmp_path / "0-alias.webp")])  # a link named alone stays itself
    assert [item.path.name for item in alone] == ["0-alias.webp"]


def test_a_folder_walk_takes_every_name_pillow_gives_a_format_it_reads():
    """Each name Pillow (and pillow-heif) registers for a format a walk takes is walked: a
    JPEG 2000 photo saved as .jpf, an AVIF sequence, a PNM were passed over (audit AH F4)."""
    from PIL import Image
    from pillow_heif import register_heif_opener

    from mfclip_cli.faces.decode import IMAGE_SUFFIXES

    register_heif_opener()
    registered = Image.registered_extensions()
    formats = {registered[suffix] for suffix in IMAGE_SUFFIXES if suffix in registered}
    assert {"JPEG", "JPEG2000", "HEIF", "AVIF", "PPM", "PSD", "FLI"} <= formats
    walked = {suffix for suffix, name in registered.items() if name in formats}
    assert sorted(walked - IMAGE_SUFFIXES) == []


def test_symlink_loop_terminates_with_an_error_item(tmp_path):
    _touch(tmp_path / "loop" / "face.png")
    os.symlink(tmp_path / "loop", tmp_path / "loop" / "again")  # loop/again -> loop
    os.symlink(tmp_path / "self.jpg", tmp_path / "self.jpg")  # a link to itself
    items = collect_inputs([str(tmp_path)])
    assert [item.path.relative_to(tmp_path).as_posix() for item in items] == [
        "loop/again",
        "loop/face.png",
        "self.jpg",
    ]
    assert "symbolic link loop" in items[0].error and items[1].error is None
    assert "symbolic link loop" in items[2].error


def test_special_files_and_broken_links_with_media_names_are_error_items(tmp_path):
    """A folder's FIFO named like a photo is reported, never opened (reading it would block);
    so is a link to a photo that is gone. Other names stay out of the walk, as before."""
    _touch(tmp_path / "face.png")
    os.mkfifo(tmp_path / "pipe.jpg")
    os.mkfifo(tmp_path / "pipe.log")
    os.symlink(tmp_path / "deleted.png", tmp_path / "gone.png")
    items = collect_inputs([str(tmp_path)])
    assert [(item.path.name, item.error) for item in items] == [
        ("face.png", None),
        ("gone.png", f"broken symbolic link: its target {tmp_path / 'deleted.png'} does not exist"),
        ("pipe.jpg", "not a regular file (a FIFO, socket or device): not read"),
    ]


def test_unreadable_folder_is_an_error_item_and_the_rest_goes_on(tmp_path, locked_folders):
    _touch(tmp_path / "locked" / "secret.png")
    _touch(tmp_path / "open" / "face.png")
    items = collect_inputs([str(tmp_path)])
    assert [(item.path.name, item.error) for item in items] == [
        ("locked", "cannot read directory: Permission denied"),
        ("face.png", None),
    ]


def test_globs_missing_paths_and_stdin(tmp_path):
    for name in ("x/1.png", "x/y/2.png", "x/3.jpg"):
        _touch(tmp_path / name)
    pattern = collect_inputs([str(tmp_path / "x" / "**" / "*.png")])
    assert [item.path.name for item in pattern] == ["1.png", "2.png"]
    nothing = collect_inputs([str(tmp_path / "*.gif"), str(tmp_path / "gone.png")])
    assert [item.error for item in nothing] == [
        "no file matches this pattern",
        "no such file or directory",
    ]
    stdin = io.StringIO(f"{tmp_path / 'x' / '3.jpg'}\n\n{tmp_path / 'x' / 'y'}\n")
    assert [item.path.name for item in collect_inputs(["-"], stdin=stdin)] == ["3.jpg", "2.png"]


def test_nul_separated_stdin_keeps_names_with_newlines_whole(tmp_path):
    """``find -print0 | mfclip scan - --null``: a name holding a newline is one path."""
    odd = _touch(tmp_path / "line\nbreak.png")
    plain = _touch(tmp_path / "plain.png")
    stdin = io.StringIO(f"{odd}\0{plain}\0\0")
    items = collect_inputs(["-"], stdin=stdin, separator="\0")
    assert [(item.path, item.error) for item in items] == [(odd, None), (plain, None)]


def test_a_name_split_by_a_list_of_lines_says_so(tmp_path):
    """``find | mfclip scan -`` splits a name holding a newline into two missing files, two
    errors among thousands with no word of why (audit AA L3): each half says it, and names
    --null. A name missing for no such reason stays "no such file or directory"."""
    odd = _touch(tmp_path / "line\nbreak.png")
    plain = _touch(tmp_path / "plain.png")
    stdin = io.StringIO(f"{odd}\n{plain}\n{tmp_path / 'gone.png'}\n")
    items = collect_inputs(["-"], stdin=stdin)
    assert [(item.path.name, item.error) for item in items] == [
        ("line", SPLIT_NAME),
        ("break.png", SPLIT_NAME),
        ("plain.png", None),
        ("gone.png", "no such file or directory"),
    ]
    assert "find -print0 | mfclip scan --null -" in SPLIT_NAME


def test_a_name_the_shell_left_empty_or_a_nul_without_null_is_a_usage_error(tmp_path):
    """``mfclip scan "$CASE_DIR"`` with the variable unset scanned the current folder; a
    ``find -print0`` list read as lines ended in a traceback."""
    with pytest.raises(UsageError, match="an empty path was named"):
        collect_inputs([""])
    stdin = io.StringIO(f"{_touch(tmp_path / 'a.png')}\0{_touch(tmp_path / 'b.png')}\0")
    with pytest.raises(UsageError, match="read find -print0 with --null"):
        collect_inputs(["-"], stdin=stdin)


def test_a_path_through_a_folder_without_search_permission_is_an_error_item(tmp_path, monkeypatch):
    """``find`` lists names in a folder its user may read but not enter; asking about them
    raised PermissionError, which ended the whole scan (the tests run as root: the refusal is
    the kernel's, played here)."""
    blocked = _touch(tmp_path / "noexec" / "a.png")
    plain = _touch(tmp_path / "b.png")
    real_is_dir = Path.is_dir

    def is_dir(self):
        if self.parent.name == "noexec":
            raise PermissionError(13, "Permission denied")
        return real_is_dir(self)

    monkeypatch.setattr(Path, "is_dir", is_dir)
    items = collect_inputs([str(blocked), str(plain)])
    assert [(item.path, item.error) for item in items] == [
        (blocked, "cannot read: Permission denied"),
        (plain, None),
    ]


def _deep_file(root: Path, levels: int = 22) -> None:
    """``root/m_deep/<levels folders of 200 characters>/in.png``: a path past PATH_MAX (4096),
    made through folder descriptors, which the kernel refuses by name (ENAMETOOLONG)."""
    folder = os.open(root, os.O_RDONLY)
    os.mkdir("m_deep", dir_fd=folder)
    inner = os.open("m_deep", os.O_RDONLY, dir_fd=folder)
    os.close(folder)
    for level in range(levels):
        name = f"{level:02d}" + "d" * 198
        os.mkdir(name, dir_fd=inner)
        deeper = os.open(name, os.O_RDONLY, dir_fd=inner)
        os.close(inner)
        inner = deeper
    os.close(os.open("in.png", os.O_CREAT | os.O_WRONLY, dir_fd=inner))
    os.close(inner)


def test_an_entry_that_cannot_be_asked_about_is_an_error_item_and_the_walk_goes_on(tmp_path):
    """A media entry whose path the kernel refuses (here longer than PATH_MAX; a folder that can
    be listed but not entered does the same) ended the walk of every folder above it: the files
    sorted after it were in no record, and the error blamed the folder named."""
    _touch(tmp_path / "a_first.png")
    _deep_file(tmp_path)
    _touch(tmp_path / "z_after.png")
    _touch(tmp_path / "z_folder" / "x.png")
    try:
        items = collect_inputs([str(tmp_path)])
    finally:
        shutil.rmtree(tmp_path / "m_deep")  # through folder descriptors: pytest's cleanup cannot
    first, deep, *rest = items
    assert (first.path.name, first.error) == ("a_first.png", None)
    # the first folder on the way whose path is past PATH_MAX, under the folder named
    assert deep.path.is_relative_to(tmp_path / "m_deep") and len(str(deep.path)) > 4096
    assert deep.error == "cannot read: File name too long"
    assert [(item.path.name, item.error) for item in rest] == [
        ("z_after.png", None),
        ("x.png", None),
    ]


def test_a_walked_folder_listed_but_not_searchable_gives_an_error_per_entry(tmp_path, monkeypatch):
    """``chmod -R 644 evidence/`` leaves each subfolder listable, not searchable: its files are
    named, but asking whether one exists raises PermissionError (the tests run as root: the
    kernel's refusal is played here)."""
    _touch(tmp_path / "m_noexec" / "in.png")
    _touch(tmp_path / "z_after.png")
    real_exists = Path.exists

    def exists(self, **kwargs):
        if self.parent.name == "m_noexec":
            raise PermissionError(13, "Permission denied")
        return real_exists(self, **kwargs)

    monkeypatch.setattr(Path, "exists", exists)
    items = collect_inputs([str(tmp_path)])
    assert [(item.path.name, item.error) for item in items] == [
        ("in.png", "cannot read: Permission denied"),
        ("z_after.png", None),
    ]


def test_a_special_file_walked_and_named_is_one_input(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    items = collect_inputs([str(tmp_path), str(tmp_path / "pipe.jpg")])
    assert [item.path.name for item in items] == ["pipe.jpg"] and items[0].error


def test_a_file_reached_through_a_linked_folder_is_kept_under_its_own_name(tmp_path):
    """``alink -> real`` sorts first: its files were listed as ``alink/...`` and ``real/``,
    walked already, was skipped, so the files never appeared under their own names."""
    _touch(tmp_path / "real" / "a.jpg")
    os.symlink(tmp_path / "real", tmp_path / "alink")
    items = collect_inputs([str(tmp_path)])
    assert [item.path.relative_to(tmp_path).as_posix() for item in items] == ["real/a.jpg"]
    alone = collect_inputs([str(tmp_path / "alink")])  # a linked folder named alone stays itself
    assert [item.path.relative_to(tmp_path).as_posix() for item in alone] == ["alink/a.jpg"]


def test_a_file_reached_by_other_names_is_one_input_that_carries_them(tmp_path):
    """Audit F9: a link to a file in the set was folded into the file without a word, and the
    file took the place of a link sorted before it. It keeps its own name's place and carries
    the other names, in the order met; a name a walk reached through a linked folder is a route,
    left out whichever route sorts first (a folder walked already is not walked again)."""
    _touch(tmp_path / "f9" / "a.jpg")
    _touch(tmp_path / "f9" / "c.jpg")
    os.symlink("c.jpg", tmp_path / "f9" / "0_link.jpg")
    os.symlink("c.jpg", tmp_path / "f9" / "z_link.jpg")

    def found(*names: str) -> list[tuple[str, list[str]]]:
        items = collect_inputs([str(tmp_path / name) for name in names])
        return [
            (
                item.path.relative_to(tmp_path).as_posix(),
                [p.relative_to(tmp_path).as_posix() for p in item.also_named],
            )
            for item in items
        ]

    links = ["f9/0_link.jpg", "f9/z_link.jpg"]
    assert found("f9") == [("f9/a.jpg", []), ("f9/c.jpg", links)]
    assert found("f9/c.jpg", "f9/z_link.jpg") == [("f9/c.jpg", ["f9/z_link.jpg"])]
    assert found("f9/z_link.jpg", "f9/a.jpg", "f9/c.jpg") == [
        ("f9/a.jpg", []),
        ("f9/c.jpg", ["f9/z_link.jpg"]),
    ]
    assert found("f9/c.jpg", "f9", "f9/c.jpg") == [("f9/c.jpg", links), ("f9/a.jpg", [])]
    # a linked folder sorted before or after the real one: its names are routes either way
    os.symlink("f9", tmp_path / "0dir")
    os.symlink("f9", tmp_path / "zdir")
    assert found(".") == [("f9/a.jpg", []), ("f9/c.jpg", links)]
    assert found("0dir", "f9") == found("f9", "0dir") == found(".")
    # the same files named through the linked folder: names given, so carried
    assert found("f9/c.jpg", "zdir/c.jpg") == [("f9/c.jpg", ["zdir/c.jpg"])]
    assert collect_inputs([str(tmp_path / "f9" / "a.jpg")]).folded == 0
    assert collect_inputs([str(tmp_path / "f9")]).folded == 2


def test_a_hard_link_is_another_name_of_its_file(tmp_path):
    """Two hard links of one file were two records of one file's bytes, neither naming the other
    (audit W L4); they are one input, under the name met first, carrying the other, as a
    symbolic link is. A copy stays a file of its own."""
    first = _touch(tmp_path / "a.jpg")
    (tmp_path / "sub").mkdir()
    os.link(first, tmp_path / "sub" / "b.jpg")
    (tmp_path / "c.jpg").write_bytes(first.read_bytes())
    items = collect_inputs([str(tmp_path)])
    assert [(item.path.name, [p.name for p in item.also_named]) for item in items] == [
        ("a.jpg", ["b.jpg"]),
        ("c.jpg", []),
    ]
    assert items.folded == 1


def test_a_folder_named_through_a_link_is_said_with_its_real_folder(tmp_path):
    """Review 10 (M5): ``scan alink`` records the files as ``alink/...``, their own names
    nowhere; stderr now names the real folder, and only where the files kept the link's name."""
    from rich.console import Console

    from mfclip_cli.engines.scan.request import ScanRequest
    from mfclip_cli.engines.scan.run import _inputs

    _touch(tmp_path / "real" / "a.jpg")
    os.symlink(tmp_path / "real", tmp_path / "alink")
    _touch(tmp_path / "other" / "b.jpg")

    def said(*names: str) -> str:
        stderr = io.StringIO()
        request = ScanRequest([str(tmp_path / name) for name in names])
        _inputs(request, None, Console(file=stderr, width=400))
        return stderr.getvalue()

    note = f"alink leads through a symbolic link to {tmp_path / 'real'}: 1 file(s) are recorded"
    assert note in said("alink", "other")
    assert "symbolic link to" not in said("real", "alink")  # kept under their own names
    assert "symbolic link to" not in said("real", "other")
    deeper = collect_inputs([str(tmp_path / "alink" / ".")])  # through a link, not one itself
    assert list(deeper.linked_folders.values()) == [str(tmp_path / "real")]


def test_a_loop_reached_through_a_linked_folder_is_kept_under_its_own_name(tmp_path):
    """``ev/linkdir -> sub`` sorted first, and the loops in ``sub`` were reported as
    ``linkdir/loop`` and ``linkdir/again``: an error entry never took the place of another, so the
    loops' own names, met later, were dropped."""
    (tmp_path / "sub").mkdir()
    os.symlink("loop.jpg", tmp_path / "sub" / "loop.jpg")  # a link to itself
    os.symlink(".", tmp_path / "sub" / "again")  # back to its own folder
    os.symlink("sub", tmp_path / "linkdir")
    items = collect_inputs([str(tmp_path)])
    assert [item.path.relative_to(tmp_path).as_posix() for item in items] == [
        "sub/again",
        "sub/loop.jpg",
    ]
    assert all("symbolic link loop" in item.error and not item.also_named for item in items)


def test_a_link_out_of_the_folder_named_is_an_error_item_not_followed(tmp_path):
    """An extraction's absolute link (``DCIM -> /home/...``) put the analyst's own files in the
    suspect's report, under the evidence's path, as if they were evidence (audit F1)."""
    evidence, elsewhere = tmp_path / "case", tmp_path / "analyst"
    _touch(evidence / "own.jpg")
    _touch(evidence / "sub" / "inner.png")
    _touch(elsewhere / "private" / "mine.jpg")
    _touch(elsewhere / "single.png")
    os.symlink(elsewhere / "private", evidence / "DCIM")  # a folder outside
    os.symlink(elsewhere / "single.png", evidence / "link.png")  # a file outside
    os.symlink(evidence / "sub", evidence / "inside")  # inside: followed, kept under its own name
    os.symlink("/nonexistent/x.jpg", evidence / "gone.jpg")  # broken: said so, not "outside"
    items = collect_inputs([str(evidence)])
    found = {item.path.relative_to(evidence).as_posix(): item.error for item in items}
    assert set(found) == {"DCIM", "gone.jpg", "link.png", "own.jpg", "sub/inner.png"}
    assert found["gone.jpg"].startswith("broken symbolic link")
    assert found["own.jpg"] is None and found["sub/inner.png"] is None
    for name in ("DCIM", "link.png"):
        assert "outside the folder named: not followed" in found[name]
    # a quoted glob keeps the folder it searches as the boundary, its matches' links included
    matched = collect_inputs([str(evidence / "*")])
    found = {item.path.relative_to(evidence).as_posix(): item.error for item in matched}
    assert found["own.jpg"] is None and found["sub/inner.png"] is None
    for name in ("DCIM", "link.png"):
        assert "outside the folder named: not followed" in found[name]
    deep = collect_inputs([str(evidence / "**" / "*.jpg")])
    assert not any(item.error is None and "mine" in item.path.name for item in deep)
    # named, a link is followed wherever it leads
    named = collect_inputs([str(evidence / "DCIM"), str(evidence / "link.png")])
    assert [(item.path.name, item.error) for item in named] == [
        ("mine.jpg", None),
        ("link.png", None),
    ]


def test_files_a_walk_passes_over_are_counted(tmp_path):
    """Files whose names are no picture's or video's vanished without a word (audit F3); phone
    and camcorder videos (.3gp, .mts) among them."""
    for name in ("a.jpg", "clip.3gp", "cam.mts", "notes.txt", "carved_0001", "sub/x.jpg.bak"):
        _touch(tmp_path / name)
    items = collect_inputs([str(tmp_path)])
    assert [item.path.name for item in items] == ["a.jpg", "cam.mts", "clip.3gp"]
    assert items.not_media == 3
    os.symlink(tmp_path / "sub", tmp_path / "a_link")  # sub walked twice: its file counted once
    assert collect_inputs([str(tmp_path)]).not_media == 3
    assert collect_inputs([str(tmp_path / "notes.txt")]).not_media == 0  # named: attempted


def test_paths_on_stdin_are_paths_not_patterns(tmp_path):
    """Audit Z5: a missing ``IMG[1].jpg`` listed on stdin was globbed, and IMG1.jpg scanned in its
    place without a word. The shell or find expanded the list already."""
    _touch(tmp_path / "IMG1.jpg")
    listed = f"{tmp_path / 'IMG[1].jpg'}\n"
    (item,) = collect_inputs(["-"], stdin=io.StringIO(listed))
    assert item.path == tmp_path / "IMG[1].jpg" and item.error == "no such file or directory"
    (named,) = collect_inputs([str(tmp_path / "IMG[1].jpg")])  # on the command line, a pattern
    assert named.path == tmp_path / "IMG1.jpg" and named.error is None
    _touch(tmp_path / "IMG[1].jpg")  # one that exists is itself, from either
    (item,) = collect_inputs(["-"], stdin=io.StringIO(listed))
    assert item.path == tmp_path / "IMG[1].jpg" and item.error is None


def test_folders_named_without_an_image_or_video_are_listed(tmp_path):
    """Audit Z1: an empty (or unmounted) evidence folder named beside others left no trace."""
    photo = _touch(tmp_path / "case" / "a.jpg")
    (tmp_path / "empty").mkdir()
    _touch(tmp_path / "notes" / "readme.txt")
    _touch(tmp_path / "case" / "sub" / "b.png")
    inputs = collect_inputs(
        [str(photo), str(tmp_path / "empty"), str(tmp_path / "notes"), str(tmp_path / "case")]
    )
    assert [item.path.name for item in inputs] == ["a.jpg", "b.png"]
    assert inputs.folders_without_media == [tmp_path / "empty", tmp_path / "notes"]
    # a folder walked already (named after its parent) holds its inputs still; one named twice
    # is listed once; one on stdin counts as one named
    again = collect_inputs(
        [str(tmp_path / "case"), str(tmp_path / "case" / "sub"), "-", str(tmp_path / "empty")],
        stdin=io.StringIO(f"{tmp_path / 'empty'}\n"),
    )
    assert again.folders_without_media == [tmp_path / "empty"]
    # audit R F2: a folder whose entries are error records (a link leading out, a broken link)
    # holds something the report lists
    (tmp_path / "links").mkdir()
    os.symlink(photo, tmp_path / "links" / "out.jpg")
    (tmp_path / "broken").mkdir()
    os.symlink(tmp_path / "nowhere.png", tmp_path / "broken" / "x.png")
    linked = collect_inputs([str(tmp_path / "links"), str(tmp_path / "broken")])
    assert all(item.error for item in linked) and linked.folders_without_media == []
