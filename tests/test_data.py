"""The data layer: dataset layouts, manifests, and protocols that split without leakage."""

import io
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from mfclip_cli.data import (
    DataError,
    DataIndex,
    Protocol,
    ProtocolError,
    Sample,
    detect_layout,
    group_fraction,
    load_protocol,
    parse_protocol,
    read_dataset,
    read_manifest,
    select,
    shipped_protocols,
    write_manifest,
)
from mfclip_cli.data import samples as samples_module
from mfclip_cli.data.protocols import Splits
from mfclip_cli.errors import UsageError

_PNG = None


def _touch(root: Path, *relatives: str) -> None:
    """Write a tiny real PNG at each relative path (and a video file where the name says so)."""
    global _PNG
    if _PNG is None:
        buffer = io.BytesIO()
        Image.new("RGB", (4, 4), (120, 80, 40)).save(buffer, format="PNG")
        _PNG = buffer.getvalue()
    for relative in relatives:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_PNG if not relative.endswith(".mp4") else b"not really a video")


def _by_path(index: DataIndex) -> dict[str, Sample]:
    return {sample.path: sample for sample in index.samples}


# ----------------------------------------------------------------------------- layouts


def test_folder_layout(tmp_path):
    root = tmp_path / "faces"
    _touch(
        root,
        "real/ffhq/00001.png",
        "Real/celeba/sub/00002.jpg",
        "real/00003.png",
        "diffusion/t2i/sdxl/a.png",
        "diffusion/T2I/sdxl/deeper/b.webp",
        "diffusion/fs/c.png",
        "diffusion/d.png",
        "GAN/efs/stylegan2/e.png",
        "gan/efs/stylegan2/A/000_003.mp4/0001.png",
        "gan/efs/stylegan2/B/000_003.mp4/0001.png",
        "real/000_004.mp4/0001.png",
        "real/phone/IMG_0001.HEIC",  # a phone's own photo: a sample as scan reads it
        "real/notes.txt",
        "real/clip.mp4",
        ".hidden/x.png",
    )
    assert detect_layout(root) == "folder"
    index = read_dataset(root)
    assert index.layout == "folder" and index.root == root.absolute()
    samples = _by_path(index)
    assert list(samples) == sorted(samples) and len(samples) == 12
    assert samples["real/phone/IMG_0001.HEIC"].label == "real"
    got = {
        p: (s.label, s.forgery_type, s.generator, s.dataset, s.video, s.split)
        for p, s in samples.items()
    }
    assert got["real/ffhq/00001.png"] == ("real", "none", "ffhq", "faces", None, None)
    assert got["Real/celeba/sub/00002.jpg"] == ("real", "none", "celeba", "faces", None, None)
    assert got["real/00003.png"] == ("real", "none", "", "faces", None, None)
    assert got["diffusion/t2i/sdxl/a.png"] == ("diffusion", "t2i", "sdxl", "faces", None, None)
    assert got["diffusion/T2I/sdxl/deeper/b.webp"] == (
        "diffusion",
        "t2i",
        "sdxl",
        "faces",
        None,
        None,
    )
    assert got["diffusion/fs/c.png"] == ("diffusion", "fs", "", "faces", None, None)
    assert got["diffusion/d.png"] == ("diffusion", "", "", "faces", None, None)
    assert got["GAN/efs/stylegan2/e.png"] == ("gan", "efs", "stylegan2", "faces", None, None)
    a, b = (
        samples["gan/efs/stylegan2/A/000_003.mp4/0001.png"],
        samples["gan/efs/stylegan2/B/000_003.mp4/0001.png"],
    )
    assert (a.video, b.video) == (
        "gan/efs/stylegan2/A/000_003.mp4",
        "gan/efs/stylegan2/B/000_003.mp4",
    )
    assert (a.forgery_type, a.generator) == ("efs", "stylegan2")
    # a video folder directly under real/ is not a source name
    assert got["real/000_004.mp4/0001.png"] == (
        "real",
        "none",
        "",
        "faces",
        "real/000_004.mp4",
        None,
    )
    assert index.absolute(samples["diffusion/d.png"]) == root.absolute() / "diffusion" / "d.png"
    assert read_dataset(root, layout="folder", dataset="mine").samples[0].dataset == "mine"
    # mfclip prepare reads video files as samples too, labelled by their place
    with_videos = _by_path(read_dataset(root, include_videos=True))
    assert len(with_videos) == 13 and with_videos["real/clip.mp4"].label == "real"
    assert with_videos["real/clip.mp4"].video is None
    counts = index.counts()
    assert counts["total"] == 12 and counts["label"] == {"real": 5, "diffusion": 4, "gan": 3}
    assert counts["generator"]["diffusion"] == {"sdxl": 2, "unknown": 2} and counts["videos"] == 3


def test_manifest_layouts_and_round_trip(tmp_path):
    samples = [
        Sample("b/2.png", "gan", "EFS", "StyleGAN2", "mine", video="b/clip.mp4", split="train"),
        Sample("a/1.png", "real", dataset="mine"),
        Sample("c/3.png", "diffusion", "t2i", "", "other", split="test"),
        Sample("d/é 4.png", "diffusion", "", 'sd,"21"', "mine"),
    ]
    assert samples[0].forgery_type == "efs" and samples[1].forgery_type == "none"
    for name in ("manifest.jsonl", "manifest.csv"):
        folder = tmp_path / name.replace(".", "_")
        path = write_manifest(folder / name, samples)
        assert read_manifest(path) == samples  # exact, in file order
        assert read_manifest(folder) == samples
        assert detect_layout(folder) == "manifest" and detect_layout(path) == "manifest"
        index = read_dataset(folder)
        assert index.layout == "manifest" and index.root == folder.absolute()
        assert [s.path for s in index.samples] == sorted(s.path for s in samples)
        with pytest.raises(FileExistsError):
            write_manifest(path, samples)
        write_manifest(path, samples[:1], overwrite=True)
        assert read_manifest(path) == samples[:1]
    # a missing dataset is filled in from the folder name by read_dataset
    folder = tmp_path / "nameless"
    folder.mkdir()
    (folder / "manifest.jsonl").write_text('{"path": "x.png", "label": "real"}\n\n')
    assert read_dataset(folder).samples[0].dataset == "nameless"
    assert read_manifest(folder)[0].dataset == ""
    assert read_dataset(folder / "manifest.jsonl", dataset="given").samples[0].dataset == "given"


@pytest.mark.parametrize(
    "name, text, message",
    [
        (
            "m.jsonl",
            '{"path": "a.png", "label": "real"}\n\n{"path": "b.png", "label": "fake"}\n',
            r"line 3:.*'label'",
        ),
        (
            "m.jsonl",
            '{"path": "a.png", "label": "real"}\n{"path": "b.png"\n',
            r"line 2: not valid JSON",
        ),
        ("m.jsonl", '{"label": "real"}\n', r"line 1: missing required field 'path'"),
        (
            "m.jsonl",
            '{"path": "a.png", "label": "gan", "generater": "x"}\n',
            r"line 1: unknown field.*'generater'",
        ),
        (
            "m.jsonl",
            '{"path": "a.png", "label": "gan", "generator": 3}\n',
            r"line 1: field 'generator' must be a string",
        ),
        (
            "m.jsonl",
            '{"path": "a.png", "label": "gan"}\n{"path": "a.png", "label": "real"}\n',
            r"line 2:.*line 1",
        ),
        (  # one file, spelled two ways (audit G M4: one crop under two labels)
            "m.jsonl",
            '{"path": "./a.png", "label": "gan"}\n{"path": "b/../a.png", "label": "real"}\n',
            r"line 2: path 'b/../a.png' already listed on line 1 \(as './a.png'\)",
        ),
        ("m.jsonl", "[1, 2]\n", r"line 1: a sample must be an object"),
        (  # a name no UTF-8 text holds (prepare stopped on it with a traceback: audit AM F8)
            "m.jsonl",
            '{"path": "b.png", "label": "gan"}\n{"path": "a\\udcff.png", "label": "real"}\n',
            r"line 2: field 'path' must be UTF-8 text, not 'a\\\\xff.png'",
        ),
        (
            "m.csv",
            "path,label,split\na.png,real,train\nb.png,gan,holdout\n",
            r"line 3: field 'split'",
        ),
        ("m.csv", "path,labels\na.png,real\n", r"line 1: unknown column.*'labels'"),
        ("m.csv", "path,label\na.png,real,extra\n", r"line 2: more cells"),
    ],
)
def test_bad_manifest_lines_name_the_line(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_manifest(path)


def test_unknown_layouts_and_empty_datasets(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(UsageError, match="cannot tell the layout.*manifest: .*diff: .*folder: "):
        detect_layout(tmp_path)
    with pytest.raises(UsageError, match="unknown layout 'ffpp' .*manifest, diff, genface"):
        read_dataset(tmp_path, layout="ffpp")
    videos = tmp_path / "videos"
    _touch(videos, "real/a.mp4")
    with pytest.raises(DataError, match=r"no samples.*1 video file\(s\).*mfclip prepare"):
        read_dataset(videos)
    _touch(tmp_path, "stuff/x.png", "real/y.png")
    # named with --layout, a tree that does not fit it is a usage error (exit 2)
    with pytest.raises(UsageError, match="--layout folder does not fit.*do not fit the folder"):
        read_dataset(tmp_path, layout="folder")
    with pytest.raises(FileNotFoundError):
        read_dataset(tmp_path / "missing")


def test_the_walk_keeps_out_what_cannot_be_read_and_says_so(tmp_path, locked_folders):
    """FIFOs and broken links named like images are not samples (reading a FIFO blocks), nor is
    a name that is not UTF-8 (manifests and reports name samples as text: prepare stopped on
    one with a traceback); an unreadable folder is not skipped silently; hidden entries and a
    second route to a folder are left out; the rest is read as before."""
    root = tmp_path / "faces"
    _touch(root, "real/ffhq/1.png", "gan/stylegan/2.png", "real/locked/3.png", "real/.cache/4.png")
    os.mkfifo(root / "real" / "ffhq" / "pipe.png")
    os.symlink(root / "gone.png", root / "gan" / "stylegan" / "broken.png")
    os.symlink(root / "real", root / "real" / "ffhq" / "loop")  # leads back up: read there
    (root / "gan" / "stylegan" / os.fsdecode(b"caf\xe9.png")).write_bytes(b"x")  # not UTF-8
    index = read_dataset(root, layout="folder")
    assert sorted(_by_path(index)) == ["gan/stylegan/2.png", "real/ffhq/1.png"]
    assert index.skipped == {
        samples_module.NOT_A_FILE: 2,
        samples_module.NOT_TEXT: 1,
        "real/locked/: cannot read folder (Permission denied)": 1,
        "real/ffhq/loop/: a link to real/, read where it lies": 1,
    }


def test_a_generator_folder_one_level_too_high_is_noted(tmp_path):
    """``gan/StyleGAN2/`` (the common ``<label>/<generator>/`` tree) is read, as documented, as
    a forgery type named StyleGAN2, no generator: nothing said it, cross-generator failed with
    "found 0" and cross-forgery tested generators (audit AI F4). inspect's notes say it, and so
    does the cross-generator refusal; a known forgery type is no news."""
    _touch(tmp_path, "real/ffhq/1.png", "gan/StyleGAN2/2.png", "gan/StyleGAN2/3.png",
           "diffusion/t2i/sdxl/4.png", "diffusion/Midjourney/5.png")  # fmt: skip
    index = read_dataset(tmp_path, layout="folder")
    assert index.notes == {
        f"{label}/{kind}/: read as the forgery type {kind!r}, which is none of the known ones "
        f"(efs, fs, fe, fr, am, t2i, i2i); a generator's folder goes below one "
        f"({label}/efs/{kind}/) or in a manifest": count
        for label, kind, count in (("diffusion", "Midjourney", 1), ("gan", "StyleGAN2", 2))
    }
    with pytest.raises(ProtocolError, match="forgery types include midjourney, stylegan2, none"):
        select(index, "cross-generator")
    known = tmp_path / "known"
    _touch(known, "real/ffhq/1.png", "gan/efs/StyleGAN2/2.png", "diffusion/FS/x/3.png")
    assert read_dataset(known, layout="folder").notes == {}


def test_the_forgery_types_the_prompts_name_are_known_to_the_data_layer():
    from mfclip_cli.labels import FORGERY_TYPES
    from mfclip_cli.model.config import PROMPT_SETS

    for prompts in PROMPT_SETS.values():
        assert set(prompts["forgery_type_names"]) <= set(FORGERY_TYPES)


def test_sample_dict_round_trip_and_errors():
    sample = Sample("x/y.png", "Diffusion", "T2I", " sdxl ", "d", video="x", split="Validation")
    assert (sample.label, sample.forgery_type, sample.generator, sample.split) == (
        "diffusion",
        "t2i",
        "sdxl",
        "val",
    )
    assert Sample.from_dict(json.loads(json.dumps(sample.to_dict()))) == sample
    assert sample.label_set.label == "diffusion" and sample.label_set.generator == "sdxl"
    with pytest.raises(ValueError, match="field 'label'"):
        Sample.from_dict({"path": "a", "label": "fake"})
    with pytest.raises(ValueError, match="missing required field 'label'"):
        Sample.from_dict({"path": "a"})
    with pytest.raises(ValueError, match="real sample must be 'none'"):
        Sample("a", "real", "fs")


def test_the_data_layer_does_not_import_torch():
    code = (
        "import sys, mfclip_cli.data as d; d.load_protocol('in-domain'); "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


# ----------------------------------------------------------------------------- protocols


def _synthetic(n: int = 1200, frames: int = 1) -> list[Sample]:
    """Reals and fakes over 3 datasets, 3 forgery types and 6 generators; ``frames`` per video."""
    generators = {"efs": ("ddpm", "sd21"), "fs": ("diffswap", "simswap"), "fe": ("dcface", "stgan")}
    samples = []
    for i in range(n):
        j = i // frames  # the video (or the image itself): every frame of a video shares its labels
        dataset = ("alpha", "beta", "gamma")[j % 3]
        video = f"{dataset}/{j:04d}.mp4" if frames > 1 else None
        if j % 4 == 0:
            samples.append(
                Sample(f"{dataset}/real/{i:05d}.png", "real", dataset=dataset, video=video)
            )
            continue
        forgery_type = ("efs", "fs", "fe")[(j // 4) % 3]
        generator = generators[forgery_type][(j // 12) % 2]
        label = "gan" if generator in ("stgan", "simswap") else "diffusion"
        samples.append(
            Sample(
                f"{dataset}/{generator}/{i:05d}.png",
                label,
                forgery_type,
                generator,
                dataset,
                video=video,
            )
        )
    return samples


def _check_partition(samples, splits):
    chosen = splits.train + splits.val + splits.test + splits.dropped
    assert sorted(s.path for s in chosen) == sorted(s.path for s in samples)


def test_shipped_protocols():
    shipped = shipped_protocols()
    assert list(shipped) == [
        "cross-dataset",
        "cross-dataset-ordered",
        "cross-forgery",
        "cross-generator",
        "df40",
        "df40-fs",
        "diff",
        "diffusionforensics",
        "genface",
        "genimage",
        "in-domain",
    ]
    assert all("test" in description for description in shipped.values())
    in_domain = load_protocol("in-domain")
    assert (
        in_domain.holdout,
        in_domain.use_layout_split,
        in_domain.val_fraction,
        in_domain.test_fraction,
    ) == (None, True, 0.1, 0.2)
    assert load_protocol("cross-forgery").report_by == "forgery_type"
    assert load_protocol("cross-dataset").report_by == "dataset"
    for name in shipped:
        protocol = load_protocol(name)
        assert parse_protocol(json.loads(json.dumps(protocol.to_dict()))) == protocol
    with pytest.raises(ProtocolError, match="no protocol named 'cross-everything'.*in-domain"):
        load_protocol("cross-everything")


def test_in_domain_partitions_with_the_right_fractions():
    samples = _synthetic(1000)
    splits = select(samples, "in-domain")
    _check_partition(samples, splits)
    assert not splits.dropped and splits.held_out == ()
    assert len(splits.train) + len(splits.val) + len(splits.test) == 1000
    assert (
        len(
            {s.path for s in splits.train}
            | {s.path for s in splits.val}
            | {s.path for s in splits.test}
        )
        == 1000
    )
    assert abs(len(splits.test) / 1000 - 0.2) < 0.04 and abs(len(splits.val) / 1000 - 0.1) < 0.03
    again = select(list(samples), load_protocol("in-domain"))
    assert (again.train, again.val, again.test) == (splits.train, splits.val, splits.test)
    subsets = splits.test_subsets()
    assert list(subsets) == sorted(subsets) and len(subsets) == 6
    reals = [s for s in splits.test if s.is_real]
    assert all(set(reals) <= set(subset) for subset in subsets.values())
    assert all(
        {s.generator for s in subset if not s.is_real} == {name} for name, subset in subsets.items()
    )
    summary = splits.summary()
    assert summary["protocol"]["name"] == "in-domain" and summary["test"]["total"] == len(
        splits.test
    )


def test_frames_of_one_video_share_a_split():
    samples = _synthetic(1200, frames=6)
    for name in ("in-domain", "cross-generator"):
        splits = select(samples, name)
        where: dict[str, set[str]] = {}
        for split in ("train", "val", "test"):
            for sample in getattr(splits, split):
                where.setdefault(sample.video, set()).add(split)
        assert all(len(places) == 1 for places in where.values())
    # the video key is the full relative path, so same-named videos in two folders are two groups
    a, b = "A/000_003.mp4", "B/000_003.mp4"
    assert group_fraction(a, 0) != group_fraction(b, 0)
    many = [
        Sample(f"{folder}/{i:03d}_003.mp4/0001.png", "real", video=f"{folder}/{i:03d}_003.mp4")
        for folder in "AB"
        for i in range(200)
    ]
    splits = select(many, Protocol("p", val_fraction=0.3, test_fraction=0.3), required=())
    place = {s.video: split for split in ("train", "val", "test") for s in getattr(splits, split)}
    assert sum(place[f"A/{i:03d}_003.mp4"] != place[f"B/{i:03d}_003.mp4"] for i in range(200)) > 50


def _auto_holdout(samples, field):
    """The last third by name; for generators, the last third within each fake family."""

    def last_third(values):
        values = sorted(values)
        return values[-max(1, -(-len(values) // 3)) :]

    if field == "generator":
        families = {s.label for s in samples if not s.is_real}
        return tuple(
            sorted(
                v
                for label in families
                for v in last_third({s.generator for s in samples if s.label == label})
            )
        )
    return tuple(last_third({getattr(s, field) for s in samples if not s.is_real}))


def test_a_fake_without_a_generator_leaves_every_generator_its_reals():
    """Reals name no generator; one test fake without one made an "unknown" row that took every
    real, and each named generator's row had none: its AUC null, nothing said (audit N H1)."""
    samples = [
        Sample(f"{label}/{i}.png", label, "none" if label == "real" else "efs", generator)
        for label, generator, count in (
            ("real", "", 6),
            ("gan", "stylegan", 4),
            ("diffusion", "", 3),
        )
        for i in range(count)
    ]
    splits = Splits([], [], samples, (), load_protocol("in-domain"))
    subsets = splits.test_subsets()
    reals = {s.path for s in samples if s.is_real}
    assert list(subsets) == ["stylegan", "unknown"]
    assert all(reals <= {s.path for s in subset} for subset in subsets.values())
    assert [s.generator for s in subsets["stylegan"] if not s.is_real] == ["stylegan"] * 4


@pytest.mark.parametrize(
    "name, field", [("cross-generator", "generator"), ("cross-forgery", "forgery_type")]
)
def test_cross_protocols_never_train_on_a_test_value(name, field):
    samples = _synthetic(1200)
    splits = select(samples, name)
    _check_partition(samples, splits)
    expected = _auto_holdout(samples, field)
    assert splits.held_out == expected
    test_values = {getattr(s, field) for s in splits.test if not s.is_real}
    seen = {getattr(s, field) for s in splits.train + splits.val if not s.is_real}
    assert test_values == set(expected) and not test_values & seen and seen
    assert any(s.is_real for s in splits.train) and any(s.is_real for s in splits.test)
    assert set(splits.test_subsets()) == set(expected)
    assert select(samples, name).test == splits.test  # deterministic


def test_cross_dataset_holds_out_whole_datasets():
    samples = _synthetic(1200)
    splits = select(samples, "cross-dataset")
    _check_partition(samples, splits)
    assert splits.held_out == ("gamma",)
    assert {s.dataset for s in splits.test} == {"gamma"}
    assert {s.dataset for s in splits.train} == {s.dataset for s in splits.val} == {"alpha", "beta"}
    assert list(splits.test_subsets()) == ["gamma"]


def test_a_holdout_needs_two_values():
    one_generator = [
        Sample(
            f"{i}.png",
            "real" if i % 2 else "gan",
            "efs" if i % 2 == 0 else "",
            "stylegan2" if i % 2 == 0 else "",
        )
        for i in range(50)
    ]
    with pytest.raises(
        ProtocolError, match=r"needs at least two generator values.*found 1: \['stylegan2'\]"
    ):
        select(one_generator, "cross-generator")
    with pytest.raises(ProtocolError, match=r"needs at least two dataset values.*found 0"):
        select(one_generator, "cross-dataset")


def test_a_user_protocol_file_with_filters(tmp_path):
    path = tmp_path / "sd-only.toml"
    path.write_text(
        'description = "train on alpha without stgan; test on two generators"\n'
        'holdout = "generator"\nholdout_values = ["dcface", "stgan"]\n'
        "val_fraction = 0.2\ntest_fraction = 0.25\nseed = 7\n"
        '[train]\ninclude = { dataset = ["alpha"] }\nexclude = { generator = ["ddpm"] }\n'
        '[test]\nexclude = { dataset = ["beta"] }\n'
    )
    protocol = load_protocol(path)
    assert (
        protocol.name == "sd-only"
        and protocol.holdout_values == ("dcface", "stgan")
        and protocol.seed == 7
    )
    samples = _synthetic(1200)
    splits = select(samples, str(path))
    _check_partition(samples, splits)
    assert {s.dataset for s in splits.train} == {"alpha"}
    assert "ddpm" not in {s.generator for s in splits.train} and "ddpm" in {
        s.generator for s in splits.val
    }
    assert {s.generator for s in splits.test if not s.is_real} == {"dcface", "stgan"}
    assert "beta" not in {s.dataset for s in splits.test}
    assert not {"dcface", "stgan"} & {s.generator for s in splits.train + splits.val}
    assert splits.dropped


@pytest.mark.parametrize(
    "text, message",
    [
        (
            'holdout = "generator"\nhold_out_values = "auto"\n',
            r"bad.toml: unknown key\(s\) 'hold_out_values'",
        ),
        ('holdout = "model"\n', r"bad.toml: holdout must be one of"),
        ("val_fraction = 0.5\ntest_fraction = 0.5\n", r"bad.toml: val_fraction \+ test_fraction"),
        (
            '[train]\ninclude = { generatr = ["x"] }\n',
            r"bad.toml: \[train\] include: unknown sample field 'generatr'",
        ),
        ('report_by = "colour"\n', r"bad.toml: report_by"),
        ('report_by = ["dataset", "colour"]\n', r"bad.toml: report_by must be one of .* a list"),
        ('report_by = ["dataset", "dataset"]\n', r"bad.toml: report_by"),
        ("report_by = []\n", r"bad.toml: report_by"),
        ("seed = 1.5\n", r"bad.toml: seed must be an integer"),
        ("[paired_reals]\nDiffAE = [1]\n", r"bad.toml: \[paired_reals\].DiffAE must be a list"),
        ('paired_reals = ["FFHQ"]\n', r"bad.toml: \[paired_reals\] must be a table"),
        ("val_fraction = \n", r"bad.toml: not valid TOML"),
    ],
)
def test_bad_protocol_files_name_the_file(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ProtocolError, match=message):
        load_protocol(path)


def test_df40_reports_each_domain_apart_and_tests_df40_alone():
    """Audit H: ``df40`` reported a method's FF++ and Celeb-DF domains in one row (DF40's tables
    report them apart: H2), and tested FF++'s own manipulations where DeepfakeBench's JSON files
    list them beside DF40's (M2). A protocol of several report fields round-trips."""
    samples = [
        Sample("ff/simswap/0.png", "gan", "fs", "simswap", "DF40-ff", "ff/simswap/0", "test"),
        Sample("cdf/simswap/0.png", "gan", "fs", "simswap", "DF40-cdf", "cdf/simswap/0", "test"),
        Sample("ff/real/0.png", "real", "none", "FaceForensics++", "DF40-ff", "ff/real/0", "test"),
        Sample("cdf/real/0.png", "real", "none", "Celeb-DF-v2", "DF40-cdf", "cdf/real/0", "test"),
        Sample("ffpp/df/0.png", "gan", "fs", "Deepfakes", "FF-DF", "ffpp/df/0", "test"),
    ]
    protocol = load_protocol("df40")
    assert parse_protocol(protocol.to_dict()) == protocol
    subsets = select(samples, protocol, required=("test",)).test_subsets()
    assert {key: sorted(s.path for s in rows) for key, rows in subsets.items()} == {
        "DF40-cdf / simswap": ["cdf/real/0.png", "cdf/simswap/0.png"],
        "DF40-ff / simswap": ["ff/real/0.png", "ff/simswap/0.png"],
    }


def test_a_held_out_value_its_publisher_does_not_test_is_said():
    """Audit Q2: a held-out generator whose fakes lie in its publisher's train and val folders
    only is neither trained on nor tested; it vanished from the report without a word."""
    samples = [
        Sample(f"{split}/{name}/{i}.png", label, "", generator, "d", None, split)
        for split in ("train", "val", "test")
        for name, label, generator in (("real", "real", ""), ("a", "gan", "A"), ("c", "gan", "C"))
        for i in range(2)
    ] + [Sample(f"train/b/{i}.png", "gan", "", "B", "d", None, "train") for i in range(2)]
    protocol = parse_protocol(
        {"holdout": "generator", "holdout_values": ["A", "B"], "use_layout_split": True}, name="x"
    )
    splits = select(samples, protocol)
    assert splits.held_out == ("A", "B") and splits.untested_held_out() == ["B"]
    assert {s.generator for s in splits.test if not s.is_real} == {"A"}


def test_unusable_selections_are_errors():
    samples = _synthetic(300)
    with pytest.raises(ProtocolError, match=r"held-out generator value\(s\) \['sdxl'\] not found"):
        select(samples, Protocol("p", holdout="generator", holdout_values=("sdxl",)))
    with pytest.raises(ProtocolError, match="protocol 'p' leaves the val split empty"):
        select(samples, Protocol("p", val_fraction=0.0))
    # what eval asks for
    test_only = select(samples, Protocol("p", val_fraction=0.0), required=("test",))
    assert test_only.test and not test_only.val
    with pytest.raises(ProtocolError, match="leaves the test split empty"):
        select(samples, Protocol("p", test_fraction=0.0), required=("test",))
    counts = Counter(
        s.generator
        for s in select(samples, Protocol("p", holdout="generator", holdout_values="auto")).test
    )
    assert set(counts) == {
        "",
        *_auto_holdout(samples, "generator"),
    }  # reals ("") and the held-out generators
