"""The published layouts (DiFF, GenFace, DF40 + DeepfakeBench JSON, GenImage, DiffusionForensics),
each built here as its publisher lays it out, read at the folder a user downloads."""

import io
import json
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from cli import mfclip
from PIL import Image
from report_schemas import check_json_file

from mfclip_cli.data import (
    DataError,
    LabelTable,
    ProtocolError,
    detect_layout,
    load_protocol,
    locate,
    read_dataset,
    select,
)
from mfclip_cli.data import samples as samples_module
from mfclip_cli.data.layouts.df40 import LISTED_AGAIN, NOT_ON_DISK
from mfclip_cli.data.protocols import Splits, parse_protocol
from mfclip_cli.engines.inspect import inspect_dataset, render
from mfclip_cli.errors import LabelMapError, UsageError

_PNG: list[bytes] = []


def touch(root: Path, *relatives: str) -> None:
    """A tiny real PNG at each relative path."""
    if not _PNG:
        buffer = io.BytesIO()
        Image.new("RGB", (4, 4), (90, 60, 30)).save(buffer, format="PNG")
        _PNG.append(buffer.getvalue())
    for relative in relatives:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_PNG[0])


def fields(index) -> dict[str, tuple]:
    return {
        s.path: (s.label, s.forgery_type, s.generator, s.dataset, s.split, s.video)
        for s in index.samples
    }


def assert_videos_in_one_split(samples, splits) -> None:
    where: dict[str, set[str]] = {}
    for name in ("train", "val", "test"):
        for sample in getattr(splits, name):
            where.setdefault(sample.group, set()).add(name)
    assert all(len(places) == 1 for places in where.values())


# ----------------------------------------------------------------------------- DiFF


def diff_tree(root: Path, reals: bool = True) -> None:
    if reals:
        for split in ("train", "val", "test"):
            touch(root, *(f"DiFF_real/{split}/{i:04d}.png" for i in range(3)))
    touch(
        root,
        "train/T2I/Midjourney/a.png",
        "train/T2I/SDXL/b.png",
        "train/I2I/SDXL_Refiner/c.png",
        "train/FS/DCFace/d.png",
        "train/FE/Imagic/e.png",
        "val/FS/DiffFace/f.png",
        "val/FE/CycleDiffusion/g.png",
        "test/T2I/HPS/h.png",
        "test/I2I/LoRA/sub/i.png",
        "test/FE/Collaborative_Diffusion/j.png",
    )


def test_diff_at_the_download_folder_and_one_level_up(tmp_path):
    root = tmp_path / "DiFF"
    diff_tree(root)
    assert detect_layout(root) == "diff"
    index = read_dataset(root)
    got = fields(index)
    assert len(got) == 19
    assert Counter(s.split for s in index.samples) == {"train": 8, "val": 5, "test": 6}
    assert got["train/I2I/SDXL_Refiner/c.png"][:5] == (
        "diffusion",
        "i2i",
        "SDXL_Refiner",
        "DiFF",
        "train",
    )
    assert got["test/FE/Collaborative_Diffusion/j.png"][2] == "CollaborativeDiffusion"
    assert got["DiFF_real/val/0001.png"][:5] == ("real", "none", "", "DiFF", "val")
    # detected one level below the folder given
    name, found = locate(tmp_path)
    assert (name, found) == ("diff", root)
    assert len(read_dataset(tmp_path).samples) == 19
    # one split folder of it, as DiFF's test fakes come: its parent is named
    with pytest.raises(UsageError, match=r"DiFF is a diff dataset: give that folder"):
        read_dataset(root / "test")


def test_links_never_move_a_sample_between_splits(tmp_path):
    """A test folder linked into train was read once, under whichever route the walk met first
    (here as train: DiFF's test Midjourney trained on, its train files gone, nothing said); a
    test file linked from train was a sample in both splits (audit AI F1, F2). A link inside
    the tree is now said and not followed: what it leads to is read where it lies. A link out
    of the tree is followed, once however many lead there."""
    root = tmp_path / "DiFF"
    diff_tree(root)
    touch(root, "test/T2I/Midjourney/k.png", "test/T2I/Midjourney/l.png")
    (root / "train/T2I/Midjourney/a.png").unlink()
    (root / "train/T2I/Midjourney").rmdir()
    (root / "train/T2I/Midjourney").symlink_to("../../test/T2I/Midjourney")
    (root / "train/T2I/SDXL/linked.png").symlink_to("../../../test/T2I/HPS/h.png")
    touch(tmp_path, "elsewhere/HPS/m.png")  # another disk's copy of the generator's files
    (root / "test/T2I/HPS/more").symlink_to(tmp_path / "elsewhere/HPS")
    (root / "test/T2I/HPS/again").symlink_to(tmp_path / "elsewhere/HPS")
    (root / "test/T2I/HPS/m_too.png").symlink_to(tmp_path / "elsewhere/HPS/m.png")
    index = read_dataset(root)
    got = fields(index)
    assert {path: got[path][4] for path in got if "Midjourney" in path} == {
        "test/T2I/Midjourney/k.png": "test",
        "test/T2I/Midjourney/l.png": "test",
    }
    assert "train/T2I/SDXL/linked.png" not in got and got["test/T2I/HPS/h.png"][4] == "test"
    hps = sorted(path for path in got if "HPS/" in path)  # m.png by one of its three routes
    assert len(hps) == 2 and "test/T2I/HPS/h.png" in hps
    skipped = index.skipped
    assert skipped["train/T2I/Midjourney/: a link to test/T2I/Midjourney/, read where it lies"]
    assert skipped[samples_module.LINK_IN_TREE] == 1
    assert len([key for key in skipped if "the same folder as" in key]) == 1
    (again,) = [key for key in skipped if "the same file out of the tree as" in key]
    assert again.endswith(" (read there)") and again.count("HPS/") == 2  # both routes named


def test_inspect_notes_what_training_or_reading_would_meet_later(tmp_path):
    """A manifest's listed file that is not on disk showed only under --verify (audit AI F5);
    a published val split without reals, refused by train, showed only as a missing table row
    (F6). inspect notes both."""
    root = tmp_path / "DiFF"
    diff_tree(root)
    for real in (root / "DiFF_real" / "val").iterdir():
        real.unlink()
    notes = inspect_dataset(root)["notes"]
    assert notes == {
        "the published val split has no real faces (real 0, diffusion 2, gan 0): train and "
        "calibrate refuse it under a protocol that keeps the published splits": 2
    }
    listed = tmp_path / "listed"
    touch(listed, "a.png")
    (listed / "manifest.csv").write_text("path,label\na.png,real\ngone.png,gan\nb/gone.png,gan\n")
    notes = inspect_dataset(listed)["notes"]
    assert notes == {"listed in the manifest but not on disk (e.g. b/gone.png)": 2}
    # beside another dataset too (audit AN F2: "manifest+diff" was not checked)
    both = inspect_dataset([str(listed), str(root)])["notes"]
    assert both["listed in the manifest but not on disk (e.g. listed/b/gone.png)"] == 2


def test_diff_fakes_only_download_is_detected(tmp_path):
    diff_tree(tmp_path, reals=False)
    index = read_dataset(tmp_path)
    assert index.layout == "diff" and len(index.samples) == 10
    assert {s.label for s in index.samples} == {"diffusion"}


def test_a_split_folder_with_real_is_not_diff(tmp_path):
    touch(tmp_path, "train/fe/x/a.png", "train/real/b.png", "test/t2i/y/c.png", "test/real/d.png")
    with pytest.raises(UsageError) as caught:
        detect_layout(tmp_path)
    message = str(caught.value)
    for name in ("manifest", "diff", "genface", "df40", "genimage", "diffusionforensics"):
        assert f"{name}: " in message
    assert "train/ holds fe, real" in message
    with pytest.raises(UsageError, match=r"do not fit the diff layout.*train/real/b.png"):
        read_dataset(tmp_path, layout="diff")


def test_an_unmapped_generator_is_an_error_naming_it_and_a_label_map_fixes_it(tmp_path):
    diff_tree(tmp_path)
    touch(tmp_path, "test/T2I/Imagen9/x.png", "test/T2I/Imagen9/y.png")
    with pytest.raises(DataError, match=r"'Imagen9' \(2 file\(s\), e.g. test/T2I/Imagen9/x.png\)"):
        read_dataset(tmp_path)
    label_map = tmp_path.parent / "labels.toml"
    label_map.write_text('[DiFF]\nImagen9 = "diffusion"\n')
    index = read_dataset(tmp_path, label_map=label_map)
    assert {s.generator for s in index.samples if "Imagen9" in s.path} == {"Imagen9"}
    # an override replaces a shipped entry
    label_map.write_text('[DiFF]\nImagen9 = "diffusion"\nHPS = "exclude"\n')
    index = read_dataset(tmp_path, label_map=label_map)
    assert not any(s.generator == "HPS" for s in index.samples)
    assert sum(index.skipped.values()) == 1
    # a section names its dataset in any case; one that names none is an error, never ignored
    label_map.write_text('[diff]\nImagen9 = "diffusion"\nhps = "exclude"\n')
    assert read_dataset(tmp_path, label_map=label_map).samples == index.samples
    label_map.write_text('[DiFF]\nImagen9 = "diffusion"\n[Nonexistent]\nHPS = "exclude"\n')
    with pytest.raises(LabelMapError, match=r"\[Nonexistent\] is no dataset of the label table"):
        read_dataset(tmp_path, label_map=label_map)


def test_unmapped_generators_are_named_even_where_no_generator_is_known(tmp_path):
    """Where every generator is unknown (DiFF's names guessed wrong), the error names them and
    the label map, rather than "no samples found"."""
    touch(tmp_path, "test/T2I/MJv5/a.png", "test/FE/CoDiffusion/b.png")
    with pytest.raises(DataError, match=r"2 method\(s\).*'CoDiffusion'.*'MJv5'.*--label-map"):
        read_dataset(tmp_path)


def test_diff_zipped_on_macos_is_detected(tmp_path):
    """DiFF's archives were zipped on a Mac: each split folder holds a __MACOSX/ of "._" files
    beside the four subsets (its publisher: "just delete the __MACOSX")."""
    diff_tree(tmp_path, reals=False)
    for split in ("train", "val", "test"):
        touch(tmp_path, f"{split}/__MACOSX/T2I/HPS/._h.png")
    index = read_dataset(tmp_path)
    assert index.layout == "diff" and len(index.samples) == 10


def test_diff_splits_are_kept_by_every_protocol(tmp_path):
    diff_tree(tmp_path)
    for i in range(30):  # enough of each for the cross protocols to find two generators
        touch(tmp_path, f"train/T2I/Midjourney/m{i}.png", f"train/FS/DCFace/d{i}.png")
    index = read_dataset(tmp_path)
    test_paths = {s.path for s in index.samples if s.split == "test"}
    for name in ("in-domain", "cross-generator", "cross-forgery", "diff"):
        splits = select(index, name, required=("test",))
        trained = {s.path for s in splits.train + splits.val}
        assert not trained & test_paths, name
        # and test is the publisher's: a held-out generator's train/ and val/ fakes were tested
        # too, against the test reals alone (audit H H1)
        assert {s.path for s in splits.test} <= test_paths, name
    diff = select(index, "diff", required=("test",))
    assert set(diff.test_subsets()) == {"t2i", "i2i", "fe"}


# ----------------------------------------------------------------------------- GenFace


def genface_tree(root: Path) -> None:
    for split in ("train", "val", "test"):
        touch(
            root,
            f"{split}/real/CelebA_HQ/{split}_0.png",
            f"{split}/real/FFHQ/{split}_1.png",
            f"{split}/fake/EFS/Diffusion/latentdiffusion_00000.png",
            f"{split}/fake/EFS/Diffusion/colladiffusion_00001.png",
            f"{split}/fake/EFS/Diffusion/ddpm_00002.png",
            f"{split}/fake/FS/GAN/00000_FSLSD.png",
            f"{split}/fake/FS/GAN/00001_FaceSwapper.png",
            f"{split}/fake/FS/Diffusion/00000.png",
            f"{split}/fake/AM/Diffusion/00000.png",
        )


def test_genface_as_the_authors_loader_reads_it(tmp_path):
    root = tmp_path / "dfdcProtocol"
    genface_tree(root)
    assert detect_layout(root) == "genface"
    index = read_dataset(root)
    got = fields(index)
    assert len(got) == 27
    assert Counter(s.split for s in index.samples) == {"train": 9, "val": 9, "test": 9}
    assert got["test/fake/FS/GAN/00000_FSLSD.png"][:5] == ("gan", "fs", "FSLSD", "GenFace", "test")
    assert got["train/fake/EFS/Diffusion/latentdiffusion_00000.png"][:3] == (
        "diffusion",
        "efs",
        "LatentDiffusion",
    )
    assert got["val/fake/FS/Diffusion/00000.png"][:3] == ("diffusion", "fs", "DiffFace")
    assert got["val/fake/AM/Diffusion/00000.png"][:3] == ("diffusion", "am", "DiffAE")
    assert got["val/real/FFHQ/val_1.png"][:3] == ("real", "none", "FFHQ")
    generators = Counter(s.generator for s in index.samples if s.label != "real")
    assert generators == {
        name: 3
        for name in (
            "LatentDiffusion",
            "CollaborativeDiffusion",
            "DDPM",
            "FSLSD",
            "FaceSwapper",
            "DiffFace",
            "DiffAE",
        )
    }
    # at one split folder: its name's split (audit AJ J1: without one, the genface protocol
    # hashed GenFace's test images into train), and the genface protocol refuses none
    one = read_dataset(root / "train")
    assert one.layout == "genface" and {s.split for s in one.samples} == {"train"}
    test_only = read_dataset(root / "test")
    assert {s.split for s in test_only.samples} == {"test"}
    with pytest.raises(ProtocolError, match="leaves the train split empty"):
        select(test_only, "genface")
    renamed = tmp_path / "mine"
    shutil.copytree(root / "test", renamed)
    assert {s.split for s in read_dataset(renamed).samples} == {None}
    with pytest.raises(ProtocolError, match="keeps the publisher's splits"):
        select(read_dataset(renamed), "genface")
    # the authors' cross-generator protocol
    splits = select(index, "genface")
    assert {s.generator for s in splits.train} == {"CollaborativeDiffusion", "CelebA_HQ"}
    assert {s.split for s in splits.test} == {"test"}
    subsets = splits.test_subsets()
    assert len(subsets) == 7
    # each generator against the reals the authors' test_mfclip.py pairs it with
    reals = {name: {s.generator for s in chosen if s.is_real} for name, chosen in subsets.items()}
    assert reals == {name: {"FFHQ" if name == "DiffAE" else "CelebA_HQ"} for name in subsets}
    assert parse_protocol(load_protocol("genface").to_dict()) == load_protocol("genface")
    # a download without FFHQ's test reals: DiffAE's row was scored against CelebA_HQ's, the
    # pairing the protocol rules out (audit AJ J3); it holds its fakes alone
    without = [s for s in index.samples if not (s.split == "test" and s.generator == "FFHQ")]
    rows = select(replace(index, samples=without), "genface").test_subsets()
    assert [s for s in rows["DiffAE"] if s.is_real] == []
    assert {s.generator for s in rows["DDPM"] if s.is_real} == {"CelebA_HQ"}
    # another dataset's test split is no GenFace figure (audit AJ J2)
    diff_root = tmp_path / "DiFF"
    diff_tree(diff_root)
    for benchmark in ("genface", "genimage", "diffusionforensics"):
        with pytest.raises(ProtocolError, match="split empty .*its filter keeps its dataset in"):
            select(read_dataset(diff_root), benchmark, ("test",))


def test_genface_refusals(tmp_path):
    genface_tree(tmp_path)
    touch(tmp_path, "test/fake/FS/GAN/00002_Unheard.png")
    with pytest.raises(DataError, match=r"'Unheard' \(1 file"):
        read_dataset(tmp_path)
    (tmp_path / "test/fake/FS/GAN/00002_Unheard.png").unlink()
    # a name without "_" carries no generator: skipped per folder, as the loader passes it over
    touch(tmp_path, "test/fake/EFS/Diffusion/00009.png", "test/fake/EFS/Diffusion/00010.png")
    index = read_dataset(tmp_path)
    nameless = (
        "test/fake/EFS/Diffusion/: file name carries no generator (the authors' loader reads "
        "it from <generator>_NNNNN and passes such files over): not read"
    )
    assert index.skipped[nameless] == 2
    assert len(index) == 27
    for name in ("00009", "00010"):
        (tmp_path / f"test/fake/EFS/Diffusion/{name}.png").unlink()
    touch(tmp_path, "test/fake/EFS/GAN/ddpm_00009.png")
    with pytest.raises(DataError, match=r"lies in a GAN folder but the label table files DDPM"):
        read_dataset(tmp_path)


# ----------------------------------------------------------------------------- DF40


def df40_tree(root: Path) -> None:
    """DF40/ (test) and DF40_train/ (train) as the README's Folder Structure, with FF++ reals."""
    for top in ("DF40", "DF40_train"):
        for video in ("000_003", "001_870"):
            touch(root, *(f"{top}/simswap/ff/frames/{video}/{n:03d}.png" for n in range(3)))
            touch(root, *(f"{top}/simswap/ff/landmarks/{video}/{n:03d}.png" for n in range(3)))
        touch(root, f"{top}/StyleGAN2/ff/a.png", f"{top}/sd2.1/cdf/frames/id0_0001/000.png")
        touch(root, f"{top}/faceswap/ff/frames/002_006/000.png")
    touch(root, "DF40/MidJourney/fake/x.png", "DF40/MidJourney/real/y.png")
    for video in ("000", "001", "002", "003"):
        touch(
            root,
            *(
                f"FaceForensics++/original_sequences/youtube/c23/frames/{video}/{n:03d}.png"
                for n in range(2)
            ),
        )
    touch(root, "FaceForensics++/manipulated_sequences/Deepfakes/c23/frames/000_003/000.png")
    (root / "FaceForensics++/train.json").write_text('[["000", "003"]]')
    (root / "FaceForensics++/val.json").write_text('[["001", "870"]]')
    (root / "FaceForensics++/test.json").write_text('[["002", "006"]]')
    touch(root, "Celeb-DF-v2/Celeb-real/frames/id0_0000/000.png")


def test_df40_folder_tree(tmp_path):
    df40_tree(tmp_path)
    assert detect_layout(tmp_path) == "df40"
    index = read_dataset(tmp_path)
    got = fields(index)
    fakes = [s for s in index.samples if s.label != "real"]
    assert len(fakes) == 2 * (6 + 2) + 1
    assert len(index.samples) == len(fakes) + 1 + 8 + 1
    frame = got["DF40/simswap/ff/frames/000_003/001.png"]
    assert frame == ("gan", "fs", "simswap", "DF40-ff", "test", "DF40/simswap/ff/frames/000_003")
    assert got["DF40_train/sd2.1/cdf/frames/id0_0001/000.png"][:5] == (
        "diffusion",
        "efs",
        "sd2.1",
        "DF40-cdf",
        "train",
    )
    assert got["DF40/MidJourney/real/y.png"][:5] == ("real", "none", "MidJourney", "DF40", "test")
    real = "FaceForensics++/original_sequences/youtube/c23/frames/001/000.png"
    assert got[real] == (
        "real",
        "none",
        "FaceForensics++",
        "DF40-ff",
        "val",
        "FaceForensics++/original_sequences/youtube/c23/frames/001",
    )
    assert {
        got[f"FaceForensics++/original_sequences/youtube/c23/frames/{v}/000.png"][4]
        for v in ("000", "002", "003")
    } == {"train", "test"}
    assert index.counts()["videos"] == 2 * 3 + 4 + 1
    skipped = "\n".join(index.skipped)
    assert "landmarks/: facial landmarks" in skipped and "Celeb-DF-v2" not in skipped
    # FF++'s lists name every FF++ real; Celeb-DF's test list is missing
    (note,) = index.notes
    assert note.startswith("Celeb-DF's reals read without its List_of_testing_videos.txt")
    assert "manipulated_sequences/: not DF40's reals" in skipped
    assert "faceswap: excluded by the label table (graphics-based" in skipped
    # with Celeb-DF's own test list, its reals are test only where it names their video (audit H
    # M1: every real on disk was test, where DF40 tests the 178 it lists)
    touch(tmp_path, "Celeb-DF-v2/YouTube-real/frames/00170/000.png")
    (tmp_path / "Celeb-DF-v2" / "List_of_testing_videos.txt").write_text(
        "1 YouTube-real/00170.mp4\n0 Celeb-synthesis/id0_id16_0000.mp4\n"
    )
    listed = read_dataset(tmp_path)
    celeb = {s.path: s.split for s in listed.samples if s.generator == "Celeb-DF-v2"}
    assert celeb == {
        "Celeb-DF-v2/Celeb-real/frames/id0_0000/000.png": "train",
        "Celeb-DF-v2/YouTube-real/frames/00170/000.png": "test",
    }
    assert not listed.notes
    # the DF40 folder alone: its split is its name
    alone = read_dataset(tmp_path / "DF40_train")
    assert alone.layout == "df40" and {s.split for s in alone.samples} == {"train"}


def test_df40_protocol_keeps_videos_together_and_pairs_own_reals(tmp_path):
    df40_tree(tmp_path)
    for i in range(12):  # more train videos, so the carved val split holds fakes
        touch(
            tmp_path,
            *(f"DF40_train/simswap/ff/frames/1{i:02d}_0{i:02d}/00{n}.png" for n in range(2)),
        )
    index = read_dataset(tmp_path)
    splits = select(index, "df40")
    assert_videos_in_one_split(index.samples, splits)
    assert {s.dataset for s in splits.train + splits.val} == {"DF40-ff"}
    assert {s.split for s in splits.test} == {"test"}
    subsets = splits.test_subsets()
    # a row per domain and method, as DF40 reports them (audit H H2: one row mixed the domains)
    mid = subsets["DF40 / MidJourney"]
    assert {s.path for s in mid if s.is_real} == {"DF40/MidJourney/real/y.png"}
    assert all(s.generator == "FaceForensics++" for s in subsets["DF40-ff / simswap"] if s.is_real)
    # the cdf-domain fakes are scored against Celeb-DF's reals, the ff ones against FF++'s
    assert {s.generator for s in subsets["DF40-cdf / sd2.1"] if s.is_real} == {"Celeb-DF-v2"}
    assert all(s.dataset == "DF40-cdf" for s in subsets["DF40-cdf / sd2.1"])
    # DF40's Protocol 1: the FF++ domain's face swaps alone train; the same test (audit H H3)
    fs = select(index, "df40-fs")
    assert {s.forgery_type for s in fs.train + fs.val if not s.is_real} == {"fs"}
    assert {s.path for s in fs.train + fs.val if s.is_real} == {
        s.path for s in splits.train + splits.val if s.is_real
    }
    assert fs.test == splits.test
    # a protocol that does not ask for it keeps every unpaired real for each value: the reals of
    # a second --data (or of the other domain) are not dropped from the per-generator rows
    plain = Splits([], [], splits.test, (), load_protocol("in-domain")).test_subsets()
    unpaired = {s.path for s in splits.test if s.is_real and s.generator != "MidJourney"}
    assert {s.path for s in plain["sd2.1"] if s.is_real} == unpaired
    assert {s.path for s in plain["simswap"] if s.is_real} == unpaired


def ffpp_without_lists(root: Path) -> None:
    """DF40's downloads as its README lists them: DF40/, DF40_train/ and FF++'s reals, without
    FF++'s own split lists (those come from the FaceForensics repository)."""
    for i in range(12):
        touch(root, f"DF40_train/simswap/frames/1{i:02d}_2{i:02d}/000.png")
        touch(root, f"DF40/simswap/ff/frames/0{i:02d}_0{i:02d}/000.png")
        touch(root, f"{FFPP_FRAMES}/0{i:02d}/000.png", f"{FFPP_FRAMES}/0{i:02d}/001.png")


def test_df40_ffpp_reals_without_split_lists_are_noted_and_refused_by_df40(tmp_path):
    ffpp_without_lists(tmp_path)
    index = read_dataset(tmp_path)
    assert {s.split for s in index if s.generator == "FaceForensics++"} == {None}
    (note, count), *others = index.notes.items()
    assert count == 24 and not others
    assert "FaceForensics++/{train,val,test}.json" in note and "dataset/splits/" in note
    assert "FaceForensics repository, dataset/splits/{train,val,test}.json" in note
    report = inspect_dataset(tmp_path)
    assert report["notes"] == index.notes
    assert f"note: {note} (24 files)" in render(report)
    check_json_file(_write(tmp_path / "inspect.json", report), "inspect")
    # the df40 protocol promises FF++'s lists: it refuses rather than hash a test video into train
    with pytest.raises(ProtocolError, match=r"'df40' keeps the publisher's splits, but 24 sample"):
        select(index, "df40")
    with pytest.raises(ProtocolError, match=r"add them from the FaceForensics repository"):
        select(index, "df40", required=("test",))
    # protocols that hash by definition still read them
    assert select(index, "in-domain").train
    # with the lists, FF++'s test videos are test, whichever protocol
    (tmp_path / "FaceForensics++/test.json").write_text(
        json.dumps([[f"0{i:02d}", f"0{i + 6:02d}"] for i in range(6)])
    )
    (tmp_path / "FaceForensics++/train.json").write_text("[]")
    (tmp_path / "FaceForensics++/val.json").write_text("[]")
    index = read_dataset(tmp_path)
    assert not index.notes
    splits = select(index, "df40", required=("test",))
    assert {s.split for s in splits.test if s.is_real} == {"test"}
    assert len([s for s in splits.test if s.is_real]) == 24
    assert parse_protocol(load_protocol("df40").to_dict()) == load_protocol("df40")


def _write(path: Path, report: dict) -> Path:
    path.write_text(json.dumps(report))
    return path


def test_df40_ffpp_frames_all_is_one_video_per_folder_with_ffpp_split(tmp_path):
    # DF40's own rearrange.py reads <c23>/frames_all/<video>/
    c23 = "FaceForensics++/original_sequences/youtube/c23"
    touch(tmp_path, "DF40/simswap/ff/frames/000_003/000.png")
    touch(
        tmp_path, *(f"{c23}/frames_all/{v}/{n:03d}.png" for v in ("000", "003") for n in range(3))
    )
    (tmp_path / "FaceForensics++/test.json").write_text('[["000", "003"]]')
    (tmp_path / "FaceForensics++/train.json").write_text("[]")
    (tmp_path / "FaceForensics++/val.json").write_text("[]")
    got = fields(read_dataset(tmp_path))
    assert {got[f"{c23}/frames_all/000/{n:03d}.png"][4:] for n in range(3)} == {
        ("test", f"{c23}/frames/000")  # one group with frames/000/, should both be there
    }
    # both copies of a video (DF40 ships frames/, rearrange.py reads frames_all/): frames/ alone,
    # or each real video weighed twice and more in the frame-level figures (audit H M3)
    touch(tmp_path, *(f"{c23}/frames/000/{n:03d}.png" for n in range(2)))
    both = read_dataset(tmp_path)
    reals = sorted(s.path for s in both if s.is_real)
    assert reals == [f"{c23}/frames/000/000.png", f"{c23}/frames/000/001.png"] + [
        f"{c23}/frames_all/003/{n:03d}.png" for n in range(3)
    ]
    assert any("frames_all/: the same video's frames/ are read" in why for why in both.skipped)
    # without the lists, the frames of one video are still one group for a hash
    for name in ("test", "train", "val"):
        (tmp_path / f"FaceForensics++/{name}.json").unlink()
    index = read_dataset(tmp_path)
    assert len({s.group for s in index if s.is_real}) == 2 and index.notes


def test_df40_celeb_df_reals_are_the_cdf_domain_reals_in_both_modes(tmp_path):
    # the DF40 README ships Celeb-DF's reals for the cdf domain beside DF40/
    cdf = "Celeb-DF-v2/Celeb-real/frames/id0_0000"
    touch(tmp_path, "DF40/simswap/cdf/frames/id0_id1_0000/000.png", f"{cdf}/000.png")
    touch(tmp_path, "Celeb-DF-v2/YouTube-real/frames/00170/000.png", f"{FFPP_FRAMES}/000/000.png")
    touch(tmp_path, "Celeb-DF-v2/Celeb-synthesis/frames/id0_id1_0000/000.png")
    (tmp_path / "FaceForensics++/test.json").write_text('[["000", "001"]]')
    index = read_dataset(tmp_path)
    got = fields(index)
    assert got[f"{cdf}/000.png"] == ("real", "none", "Celeb-DF-v2", "DF40-cdf", "test", cdf)
    assert got["Celeb-DF-v2/YouTube-real/frames/00170/000.png"][2:5] == (
        "Celeb-DF-v2",
        "DF40-cdf",
        "test",
    )
    assert "Celeb-DF-v2/Celeb-synthesis/: Celeb-DF's own fakes" in "\n".join(index.skipped)
    # JSON mode names the same files alike
    old = "/Youtu_Pangu_Security_Public/deepfakes_detection_datasets"
    listing = lambda label, folder: {"label": label, "frames": [f"{old}/{folder}/000.png"]}  # noqa: E731
    document = {
        "simswap_cdf": {
            "simswap_Real": {"test": {"id0_0000": listing("simswap_Real", cdf)}},
            "simswap_Fake": {
                "test": {"a": listing("simswap_Fake", "DF40/simswap/cdf/frames/id0_id1_0000")}
            },
        }
    }
    write_json(tmp_path, "simswap_cdf.json", document)
    listed_got = fields(read_dataset(tmp_path))
    assert listed_got[f"{cdf}/000.png"] == got[f"{cdf}/000.png"]


def test_df40_train_frames_without_method_folder_say_where_to_move_them(tmp_path):
    # DF40's uniface.zip has no top folder: unzipped into DF40_train/ it gives frames/<pair>/
    touch(tmp_path, "DF40_train/simswap/frames/001_870/000.png")
    touch(tmp_path, "DF40_train/frames/002_006/000.png")
    with pytest.raises(DataError, match=r"frames/ directly under DF40_train/.*DF40_train/uniface/"):
        read_dataset(tmp_path)
    with pytest.raises(DataError, match=r"move it under DF40_train/uniface/"):
        read_dataset(tmp_path / "DF40_train")
    # a video's frame folder (x.mp4/) there is no frames/ folder, and no uniface archive's
    other = tmp_path / "other"
    touch(other, "DF40/simswap/ff/frames/000_003/000.png", "DF40/x.mp4/0.png")
    with pytest.raises(DataError) as raised:
        read_dataset(other)
    assert "DF40/x.mp4/0.png" in str(raised.value) and "uniface" not in str(raised.value)


def test_df40_json_and_folder_mode_name_datasets_alike(tmp_path):
    touch(tmp_path, "DF40/MidJourney/fake/x.png", "DF40/MidJourney/real/y.png")
    touch(tmp_path, "DF40/simswap/ff/frames/000_003/000.png", f"{FFPP_FRAMES}/000/000.png")
    (tmp_path / "FaceForensics++/test.json").write_text('[["000", "003"]]')
    folder = {path: row[3] for path, row in fields(read_dataset(tmp_path)).items()}
    old = "/Youtu_Pangu_Security_Public/deepfakes_detection_datasets"
    one = lambda label, path: {"label": label, "frames": [f"{old}/{path}"]}  # noqa: E731
    write_json(
        tmp_path,
        "MidJourney.json",
        {
            "MidJourney": {
                "MidJourney_Fake": {
                    "test": {"x": one("MidJourney_Fake", "DF40/MidJourney/fake/x.png")}
                },
                "MidJourney_Real": {
                    "test": {"y": one("MidJourney_Real", "DF40/MidJourney/real/y.png")}
                },
            }
        },
    )
    frame = "DF40/simswap/ff/frames/000_003/000.png"
    write_json(
        tmp_path,
        "simswap_ff.json",
        {
            "simswap_ff": {
                "simswap_Fake": {"test": {"v": one("simswap_Fake", frame)}},
                "simswap_Real": {"test": {"r": one("simswap_Real", f"{FFPP_FRAMES}/000/000.png")}},
            }
        },
    )
    listed_names = {path: row[3] for path, row in fields(read_dataset(tmp_path)).items()}
    assert listed_names == folder
    assert folder["DF40/MidJourney/real/y.png"] == "DF40"


def test_df40_deepfakebench_json(tmp_path):
    touch(
        tmp_path,
        "datasets/DF40/simswap/ff/frames/000_003/000.png",
        "datasets/DF40/simswap/ff/frames/000_003/001.png",
        "datasets/FaceForensics++/original_sequences/youtube/c23/frames/000/000.png",
        "datasets/FaceForensics++/original_sequences/youtube/c23/frames/002/000.png",
    )
    old = "/Youtu_Pangu_Security_Public/youtu-pangu-public/zhiyuanyan/deepfakes_detection_datasets"
    real = lambda v: f"{old}/FaceForensics++/original_sequences/youtube/c23/frames/{v}/000.png"  # noqa: E731
    document = {
        "simswap_ff": {
            "simswap_Real": {
                "train": {"c23": {"000": {"label": "simswap_Real", "frames": [real("000")]}}},
                "test": {"c23": {"002": {"label": "simswap_Real", "frames": [real("002")]}}},
            },
            "simswap_Fake": {
                "test": {
                    "000_003": {
                        "label": "simswap_Fake",
                        "frames": [
                            f"{old}/DF40/simswap/ff/frames/000_003/000.png",
                            f"{old}/DF40/simswap/ff/frames/000_003/001.png",
                        ],
                    }
                }
            },
        }
    }
    folder = tmp_path / "preprocessing" / "dataset_json"
    folder.mkdir(parents=True)
    (folder / "simswap_ff.json").write_text(json.dumps(document))
    (folder / "FF-FS.json").write_text(
        json.dumps({"FF-FS": {"FF-FS": {"test": {"c23": {}}}, "FF-real": {"test": {"c23": {}}}}})
    )
    assert detect_layout(tmp_path) == "df40"
    index = read_dataset(tmp_path)
    got = fields(index)
    assert got["datasets/DF40/simswap/ff/frames/000_003/001.png"] == (
        "gan",
        "fs",
        "simswap",
        "DF40-ff",
        "test",
        "datasets/DF40/simswap/ff/frames/000_003",
    )
    first = "datasets/FaceForensics++/original_sequences/youtube/c23/frames/000/000.png"
    assert got[first][:5] == ("real", "none", "FaceForensics++", "DF40-ff", "train")
    assert len(got) == 4


FFPP_FRAMES = "FaceForensics++/original_sequences/youtube/c23/frames"


def listed(root: Path, label: str, folder: str, n: int = 2) -> dict:
    """A DeepfakeBench video entry for ``n`` frames in ``folder``, written below ``root`` (the
    frame paths keep the publisher's machine's prefix)."""
    touch(root, *(f"{folder}/{i:03d}.png" for i in range(n)))
    old = "/Youtu_Pangu_Security_Public/deepfakes_detection_datasets"
    return {"label": label, "frames": [f"{old}/{folder}/{i:03d}.png" for i in range(n)]}


def write_json(root: Path, name: str, document: dict) -> None:
    folder = root / "preprocessing" / "dataset_json"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(document))


def test_df40_json_frame_under_several_splits_is_read_once_out_of_training(tmp_path):
    # DeepfakeBench's rearrange.py writes Celeb-DF test videos under test and val, and DFDC's
    # val as one {label, frames}; DF40's simswap branch writes its fakes under train, test, val
    real = listed(tmp_path, "CelebDFv2_real", "Celeb-DF-v2/Celeb-real/frames/id0_0000")
    fake = listed(tmp_path, "simswap_Fake", "DF40/simswap/ff/frames/000_003")
    ff_real = listed(tmp_path, "FF-real", f"{FFPP_FRAMES}/000")
    write_json(
        tmp_path,
        "Celeb-DF-v2.json",
        {"Celeb-DF-v2": {"CelebDFv2_real": {"test": {"id0": real}, "val": {"id0": real}}}},
    )
    write_json(tmp_path, "DFDC.json", {"DFDC": {"DFDC_Real": {"val": real}}})
    simswap = {
        "simswap_Real": {"train": {"000": ff_real}},
        "simswap_Fake": {split: {"000_003": fake} for split in ("train", "test", "val")},
    }
    write_json(tmp_path, "simswap_ff.json", {"simswap_ff": simswap})
    # the same FF++ reals under DeepfakeBench's FaceForensics++.json; of this video, one frame
    # is listed as test there, so the whole video is test
    ffpp = {
        "FF-real": {
            "train": {"c23": {"000": ff_real}},
            "test": {"c23": {"0": ff_real | {"frames": ff_real["frames"][:1]}}},
        }
    }
    write_json(tmp_path, "FaceForensics++.json", {"FaceForensics++": ffpp})
    index = read_dataset(tmp_path)
    got = fields(index)
    assert len(got) == 6
    assert {split for _, _, _, _, split, _ in got.values()} == {"test"}
    assert got[f"{FFPP_FRAMES}/000/001.png"][:3] == ("real", "none", "FaceForensics++")
    # named as DF40's simswap_ff.json names them, whichever file gave their split
    assert {got[f"{FFPP_FRAMES}/000/{i:03d}.png"][3] for i in range(2)} == {"DF40-ff"}
    assert index.skipped[LISTED_AGAIN] == 2 * 2 + 2 * 2 + 2 + 1
    # listings that disagree on what a frame is are refused, saying what differs
    write_json(tmp_path, "x.json", {"x": {"simswap_Fake": {"test": {"000": ff_real}}}})
    with pytest.raises(
        DataError,
        match=r"000/000.png is listed twice.*label 'real' in "
        r"FaceForensics\+\+.json: .*but 'gan' in x.json",
    ):
        read_dataset(tmp_path)


def test_df40_ffpp_reals_uncropped_copies_and_video_files_follow_ffpp_split(tmp_path):
    # DF40's preprocess.py writes every raw frame to frames_wocropface/<video>/; DeepfakeBench's
    # tree keeps the source videos at <c23>/videos/<id>.mp4 (prepare makes each a sample)
    df40_tree(tmp_path)
    c23 = "FaceForensics++/original_sequences/youtube/c23"
    touch(tmp_path, f"{c23}/frames_wocropface/002/000.png", f"{c23}/frames_wocropface/002/001.png")
    (tmp_path / c23 / "videos").mkdir()
    (tmp_path / c23 / "videos/002.mp4").write_bytes(b"x")
    index = read_dataset(tmp_path, include_videos=True)
    got = fields(index)
    assert not [path for path in got if "frames_wocropface" in path]
    assert f"{c23}/frames_wocropface/: uncropped copies of frames/" in "\n".join(index.skipped)
    assert got[f"{c23}/videos/002.mp4"][4:] == ("test", f"{c23}/frames/002")
    assert got[f"{c23}/frames/002/000.png"][4:] == ("test", f"{c23}/frames/002")


def test_df40_train_as_downloaded(tmp_path):
    # DF40_train unpacks without ff/: <method>/frames/<video>/ (FS, FR) and <method>/<video id>/
    # (EFS); some DF40/ archives double the method folder
    touch(
        tmp_path,
        "DF40_train/simswap/frames/000_003/000.png",
        "DF40_train/simswap/frames/000_003/001.png",
        "DF40_train/VQGAN/440/seed0188.png",
        "DF40_train/VQGAN/440/seed0189.png",
        "DF40/styleclip/styleclip/fake/1.jpg",
        "DF40/styleclip/styleclip/real/1.jpg",
        "DF40/simswap/ff/frames/001_870/000.png",
        f"{FFPP_FRAMES}/000/000.png",
    )
    index = read_dataset(tmp_path)
    got = fields(index)
    assert got["DF40_train/simswap/frames/000_003/001.png"] == (
        "gan",
        "fs",
        "simswap",
        "DF40-ff",
        "train",
        "DF40_train/simswap/frames/000_003",
    )
    assert got["DF40_train/VQGAN/440/seed0189.png"] == (
        "gan",
        "efs",
        "VQGAN",
        "DF40-ff",
        "train",
        "DF40_train/VQGAN/440",
    )
    assert got["DF40/styleclip/styleclip/fake/1.jpg"][:5] == (
        "gan",
        "fe",
        "styleclip",
        "DF40",
        "test",
    )
    assert got["DF40/styleclip/styleclip/real/1.jpg"][:5] == (
        "real",
        "none",
        "styleclip",
        "DF40",
        "test",
    )
    alone = read_dataset(tmp_path / "DF40_train")
    assert alone.layout == "df40" and len(alone) == 4
    assert {s.split for s in alone} == {"train"} and {s.dataset for s in alone} == {"DF40-ff"}
    # a test method without its domain folder is still not guessed
    touch(tmp_path, "DF40/uniface/frames/000_003/000.png")
    with pytest.raises(DataError, match=r"1 image\(s\) do not fit .*DF40/uniface/frames"):
        read_dataset(tmp_path)


def df40_json_tree(root: Path) -> None:
    """simswap_ff.json as DF40's rearrange.py writes it (FF++ reals, train and test fakes)."""
    document = {
        "simswap_Real": {
            "train": {"000": listed(root, "simswap_Real", f"{FFPP_FRAMES}/000")},
            "test": {"001": listed(root, "simswap_Real", f"{FFPP_FRAMES}/001")},
        },
        "simswap_Fake": {
            "train": {"000_003": listed(root, "simswap_Fake", "DF40_train/simswap/frames/000_003")},
            "test": {"001_870": listed(root, "simswap_Fake", "DF40/simswap/ff/frames/001_870")},
        },
    }
    write_json(root, "simswap_ff.json", {"simswap_ff": document})


def test_df40_json_missing_and_unlisted_files_are_counted(tmp_path):
    df40_json_tree(tmp_path)
    (tmp_path / "DF40/simswap/ff/frames/001_870/001.png").unlink()  # the authors: leave it out
    touch(tmp_path, "DF40/fomm/ff/frames/000_003/000.png", "DF40/fomm/ff/frames/000_003/001.png")
    touch(tmp_path, "DF40/stargan/fake/1.jpg")
    excluded = {"train": {"c23": {"000_003": listed(tmp_path, "FF-FS", "FF/FaceSwap/000", 3)}}}
    write_json(tmp_path, "FF-FS.json", {"FF-FS": {"FF-FS": excluded}})
    index = read_dataset(tmp_path)
    assert len(index) == 7
    assert index.skipped[NOT_ON_DISK] == 1
    assert index.skipped["DF40/fomm/: not listed in any dataset_json/*.json"] == 2
    assert index.skipped["DF40/stargan/: not listed in any dataset_json/*.json"] == 1
    assert [count for reason, count in index.skipped.items() if "FaceSwap: excluded" in reason] == [
        3
    ]
    # nothing listed is on disk: the wrong folder, said with an example
    for path in tmp_path.rglob("*.png"):
        path.unlink()
    with pytest.raises(
        DataError, match=r"no frame the JSON files .* list is below it \(e.g. /Yout"
    ):
        read_dataset(tmp_path)


def test_df40_aggregate_json_takes_each_frame_method_from_its_path(tmp_path):
    # DF40's Protocol-1 trains on FSAll_ff.json, whose label names no method
    fakes = {
        "000_003": listed(tmp_path, "FSAll_Fake", "DF40_train/simswap/frames/000_003"),
        "003_000": listed(tmp_path, "FSAll_Fake", "DF40_train/faceswap/frames/003_000"),
    }
    real = {"000": listed(tmp_path, "FSAll_Real", f"{FFPP_FRAMES}/000")}
    labels = {"FSAll_Real": {"train": real}, "FSAll_Fake": {"train": fakes}}
    write_json(tmp_path, "FSAll_ff.json", {"FSAll_ff": labels})
    index = read_dataset(tmp_path)
    got = fields(index)
    assert got["DF40_train/simswap/frames/000_003/000.png"][:5] == (
        "gan",
        "fs",
        "simswap",
        "DF40-ff",
        "train",
    )
    assert len(got) == 4
    assert [count for reason, count in index.skipped.items() if "faceswap: excl" in reason] == [2]
    # a frame whose label and path both name no known method is still an unmapped name
    write_json(
        tmp_path, "x.json", {"x": {"FRAll_Fake": {"test": {"v": listed(tmp_path, "x", "x/v")}}}}
    )
    with pytest.raises(DataError, match=r"'FRAll' \(2 file"):
        read_dataset(tmp_path)


def test_df40_json_own_reals_carry_their_method(tmp_path):
    # each JSON is a test set of its own fakes and reals; FF++'s reals are shared by the methods
    df40_json_tree(tmp_path)
    stargan = {
        "stargan_Real": {"test": {"1": listed(tmp_path, "stargan_Real", "DF40/stargan/real", 3)}},
        "stargan_Fake": {"test": {"1": listed(tmp_path, "stargan_Fake", "DF40/stargan/fake", 3)}},
    }
    write_json(tmp_path, "stargan.json", {"stargan": stargan})
    index = read_dataset(tmp_path)
    assert fields(index)["DF40/stargan/real/000.png"][:3] == ("real", "none", "stargan")
    test = [s for s in index if s.split == "test"]
    subsets = Splits([], [], test, (), load_protocol("df40")).test_subsets()
    assert {s.path for s in subsets["DF40 / stargan"] if s.is_real} == {
        f"DF40/stargan/real/{i:03d}.png" for i in range(3)
    }
    assert {s.generator for s in subsets["DF40-ff / simswap"] if s.is_real} == {"FaceForensics++"}


# ----------------------------------------------------------------------------- GenImage


def genimage_tree(root: Path) -> None:
    for generator in ("Stable Diffusion V1.4", "BigGAN", "Midjourney"):
        for split in ("train", "val"):
            for kind in ("ai", "nature"):
                count = 20 if (generator, split) == ("Stable Diffusion V1.4", "train") else 4
                touch(root, *(f"{generator}/{split}/{kind}/{i}.png" for i in range(count)))
    touch(
        root, "ADM/imagenet_ai_0508_adm/val/ai/0.png", "ADM/imagenet_ai_0508_adm/val/nature/0.png"
    )


def test_genimage(tmp_path):
    genimage_tree(tmp_path)
    assert detect_layout(tmp_path) == "genimage"
    index = read_dataset(tmp_path)
    got = fields(index)
    assert len(got) == 3 * 16 + 2 * 16 + 2
    assert got["BigGAN/val/ai/1.png"][:5] == ("gan", "", "BigGAN", "GenImage", "test")
    assert got["BigGAN/train/nature/1.png"][:5] == ("real", "none", "BigGAN", "GenImage", "train")
    assert got["ADM/imagenet_ai_0508_adm/val/ai/0.png"][:3] == ("diffusion", "", "ADM")
    splits = select(index, "genimage")
    assert {s.generator for s in splits.train + splits.val} == {"Stable Diffusion V1.4"}
    assert splits.val and {s.split for s in splits.test} == {"test"}
    subsets = splits.test_subsets()
    assert set(subsets) == {"ADM", "BigGAN", "Midjourney", "Stable Diffusion V1.4"}
    assert {s.path for s in subsets["BigGAN"]} == {
        f"BigGAN/val/{k}/{i}.png" for k in ("ai", "nature") for i in range(4)
    }
    # one generator's folder alone, as the Readme's tutorial trains ("only ... V1.4/ folder")
    alone = read_dataset(tmp_path / "Stable Diffusion V1.4")
    assert alone.layout == "genimage" and len(alone.samples) == 2 * 20 + 2 * 4
    assert fields(alone)["val/ai/1.png"][:5] == (
        "diffusion",
        "",
        "Stable Diffusion V1.4",
        "GenImage",
        "test",
    )


def test_genimage_merged_imagenet_ai_is_refused_saying_why(tmp_path):
    # the Readme tutorial merges every generator into imagenet_ai/: BigGAN (a GAN) among them
    root = tmp_path / "data"
    touch(root, "imagenet_ai/train/ai/a.png", "imagenet_ai/train/nature/n.JPEG")
    touch(root, "imagenet_ai/val/ai/b.png", "imagenet_ai/val/nature/v.JPEG")
    with pytest.raises(
        DataError, match=r"merge of every generator.*BigGAN.*per-generator"
    ) as error:
        read_dataset(root)
    assert "label-map" not in str(error.value)
    with pytest.raises(DataError, match=r"imagenet_ai/ is the GenImage Readme tutorial's merge"):
        read_dataset(root / "imagenet_ai")


# ----------------------------------------------------------------------------- DiffusionForensics


def test_diffusionforensics_reads_images_only(tmp_path):
    # DIRE's compute_dire.sh writes recons_test/<generator>/ and dire_test/<generator>/
    touch(tmp_path, "recons_test/sdv1/0.png", "dire_test/sdv1/0.png")
    for top in ("images", "recons", "dire"):
        for split in ("train", "test"):
            touch(
                tmp_path,
                f"{top}/{split}/lsun_bedroom/real/0.png",
                f"{top}/{split}/lsun_bedroom/adm/0.png",
                f"{top}/{split}/imagenet/sdv1/0.png",
                f"{top}/{split}/imagenet/real/0.png",
            )
    assert detect_layout(tmp_path) == "diffusionforensics"
    index = read_dataset(tmp_path)
    got = fields(index)
    assert len(got) == 8 and all(path.startswith("images/") for path in got)
    assert got["images/test/imagenet/sdv1/0.png"][:5] == (
        "diffusion",
        "",
        "SD-v1",
        "DiffusionForensics-imagenet",  # one test set per source, as DIRE reports them
        "test",
    )
    assert got["images/train/lsun_bedroom/adm/0.png"][3] == "DiffusionForensics-lsun_bedroom"
    assert got["images/train/lsun_bedroom/real/0.png"][2:4] == (
        "lsun_bedroom",
        "DiffusionForensics-lsun_bedroom",
    )
    # DIRE's benchmark: LSUN-Bedroom's ADM trains; each source's generators test against that
    # source's reals, ADM's two sets apart (audit H M5: one row mixed the sources)
    touch(
        tmp_path,
        "images/val/lsun_bedroom/real/0.png",
        "images/val/lsun_bedroom/adm/0.png",
        "images/train/imagenet/adm/0.png",
        "images/test/imagenet/adm/0.png",
    )
    splits = select(read_dataset(tmp_path), "diffusionforensics")
    assert {s.path for s in splits.train} == {
        "images/train/lsun_bedroom/real/0.png",
        "images/train/lsun_bedroom/adm/0.png",
    }
    rows = {key: sorted(s.path for s in rows) for key, rows in splits.test_subsets().items()}
    assert rows == {
        "DiffusionForensics-imagenet / ADM": [
            "images/test/imagenet/adm/0.png",
            "images/test/imagenet/real/0.png",
        ],
        "DiffusionForensics-imagenet / SD-v1": [
            "images/test/imagenet/real/0.png",
            "images/test/imagenet/sdv1/0.png",
        ],
        "DiffusionForensics-lsun_bedroom / ADM": [
            "images/test/lsun_bedroom/adm/0.png",
            "images/test/lsun_bedroom/real/0.png",
        ],
    }
    assert sorted(index.skipped) == [
        "dire/: DIRE reconstruction errors computed from images/, not samples",
        "dire_test/: DIRE reconstruction errors computed from images/, not samples",
        "recons/: reconstructions computed from images/, not samples",
        "recons_test/: reconstructions computed from images/, not samples",
    ]


# ----------------------------------------------------------------------------- refusals


def test_degenerate_splits_are_refused_naming_split_and_counts(tmp_path):
    # DiFF fakes-only: no real anywhere
    diff_tree(tmp_path, reals=False)
    index = read_dataset(tmp_path)
    with pytest.raises(ProtocolError, match=r"the train split has no real faces \(real 0, "):
        select(index, "diff")
    with pytest.raises(ProtocolError, match=r"the test split has no real faces"):
        select(index, "diff", required=("test",))


def test_several_datasets_below_one_folder_must_be_named(tmp_path):
    diff_tree(tmp_path / "a")
    genimage_tree(tmp_path / "b")
    with pytest.raises(UsageError, match=r"holds several datasets: a \(diff\), b \(genimage\)"):
        read_dataset(tmp_path)


def test_label_table_is_complete_for_the_published_method_counts():
    table = LabelTable.load()
    assert len(table.entries("DiFF")) == 13
    assert len(table.entries("DF40")) == 40
    assert len(table.entries("GenImage")) == 8
    assert Counter(m.forgery_type for m in table.entries("DF40")) == {
        "fs": 10,
        "fr": 13,
        "efs": 12,
        "fe": 5,
    }
    assert all(m.source for d in table.methods for m in table.entries(d))
    assert all(m.note for d in table.methods for m in table.entries(d) if m.excluded)


def test_standard_protocols_are_shipped():
    for name in ("diff", "genimage", "df40", "genface"):
        protocol = load_protocol(name)
        assert protocol.use_layout_split and protocol.description


# ----------------------------------------------------------------------------- the CLI


def test_data_inspect_and_prepare_dry_run(tmp_path):
    root = tmp_path / "download"
    diff_tree(root / "DiFF")
    report = tmp_path / "report.json"
    result = mfclip("data", "inspect", str(root), "--json", str(report))
    assert result.returncode == 0, result.stderr
    assert "layout diff, 19 samples, 0 videos" in result.stdout
    assert "test   diffusion  t2i      HPS" in result.stdout
    written = check_json_file(report, "inspect")
    assert written["layout"] == "diff" and written["root"] == str((root / "DiFF").absolute())
    assert sum(row["count"] for row in written["rows"]) == 19
    # an existing report is refused before the inspection, and replaced with --force
    report.write_text("mine\n")
    again = mfclip("data", "inspect", str(root), "--json", str(report))
    assert again.returncode == 2 and "--force" in again.stderr
    assert report.read_text() == "mine\n"
    forced = mfclip("data", "inspect", str(root), "--json", str(report), "--force")
    assert forced.returncode == 0 and check_json_file(report, "inspect") == {
        **written,
        "seconds": check_json_file(report, "inspect")["seconds"],
    }
    # "-" is standard output for scan only: here it wrote a file named "-" (audit U L5)
    dash = mfclip("data", "inspect", str(root), "--json", "-", cwd=tmp_path)
    assert dash.returncode == 2 and "for scan's reports only" in dash.stderr, dash.stderr
    assert not (tmp_path / "-").exists()
    named = mfclip("data", "inspect", str(root), "--json", "./-", cwd=tmp_path)  # a file, named
    assert named.returncode == 0 and check_json_file(tmp_path / "-", "inspect")["layout"] == "diff"
    out = tmp_path / "prepared"
    dry = mfclip("prepare", str(root / "DiFF"), "--out", str(out), "--dry-run")
    assert dry.returncode == 0 and "layout diff, 19 samples" in dry.stdout and not out.exists()
    # a dry run checks what the run would: the options it took and ignored passed unseen
    for wrong, said in (
        (["--config", "no-such-config"], "no model config 'no-such-config'"),
        (["--frames", "0"], "--frames must be at least 1"),
        (["--out", str(root / "DiFF" / "crops")], "lies inside the source dataset"),
    ):
        odd = mfclip("prepare", str(root / "DiFF"), "--out", str(out), "--dry-run", *wrong)
        assert odd.returncode == 2 and said in odd.stderr, odd.stderr
    # a label map on a prepared folder (a manifest) would be ignored: refused, as train does
    label_map = tmp_path / "labels.toml"
    label_map.write_text('[DiFF]\nHPS = "exclude"\n')
    (tmp_path / "lists").mkdir()
    manifest = tmp_path / "lists" / "manifest.csv"  # --out outside its folder
    manifest.write_text("path,label\n../DiFF/DiFF_real/train/a.png,real\n")
    for command in (["data", "inspect"], ["prepare", "--dry-run", "--out", str(out)]):
        ignored = mfclip(*command, str(manifest), "--label-map", str(label_map))
        assert ignored.returncode == 2 and "prepare the dataset again" in ignored.stderr
    touch(tmp_path / "odd", "train/fe/x/a.png", "train/real/b.png")
    refused = mfclip("data", "inspect", str(tmp_path / "odd"))
    assert refused.returncode == 2 and "cannot tell the layout" in refused.stderr
    assert "diff: no DiFF_real/" in refused.stderr


def test_docs_print_the_whole_label_table():
    text = (Path(__file__).parents[1] / "docs" / "datasets.md").read_text(encoding="utf-8")
    table = LabelTable.load()
    for dataset in table.methods:
        for method in table.entries(dataset):
            assert f"| {method.name} | {method.label} |" in text, (dataset, method.name)


def test_video_files_are_counted_where_they_are_not_samples(tmp_path):
    """A raw folder's video files are not samples for train or eval (their frames are, once
    prepared): inspect says they were skipped and why; prepare --dry-run counts them."""
    from media import save_video

    from mfclip_cli.data.samples import VIDEO_FILES_SKIPPED
    from mfclip_cli.engines.inspect import inspect_dataset

    touch(
        tmp_path, *(f"{label}/{i}.png" for label in ("real/camera", "gan/efs/sg2") for i in (0, 1))
    )
    save_video(tmp_path / "real" / "camera" / "clip.mp4", frames=3)
    save_video(tmp_path / "gan" / "efs" / "sg2" / "clip.avi", frames=3)
    read = inspect_dataset(tmp_path)
    assert read["samples"] == 4 and read["videos"] == 0
    assert read["skipped"] == {VIDEO_FILES_SKIPPED: 2}
    planned = inspect_dataset(tmp_path, include_videos=True)
    assert planned["samples"] == 6 and planned["videos"] == 2 and planned["skipped"] == {}


def test_df40_json_reals_only_deepfakebench_lists_are_named_by_their_domain(tmp_path):
    """FF++'s and Celeb-DF's reals listed only by DeepfakeBench's own files are DF40-ff /
    DF40-cdf beside DF40's fakes, as a folder read names them: the df40 protocol trains on
    DF40-ff, and pairs each domain's fakes with that domain's reals."""
    fake = listed(tmp_path, "simswap_Fake", "DF40_train/simswap/ff/frames/000_003")
    ff_real = listed(tmp_path, "FF-real", f"{FFPP_FRAMES}/000")
    cdf_real = listed(tmp_path, "CelebDFv2_real", "Celeb-DF-v2/Celeb-real/frames/id0_0000")
    write_json(
        tmp_path, "simswap_ff.json", {"simswap_ff": {"simswap_Fake": {"train": {"a": fake}}}}
    )
    write_json(
        tmp_path,
        "FaceForensics++.json",
        {"FaceForensics++": {"FF-real": {"train": {"000": ff_real}}}},
    )
    write_json(
        tmp_path,
        "Celeb-DF-v2.json",
        {"Celeb-DF-v2": {"CelebDFv2_real": {"test": {"id0": cdf_real}}}},
    )
    got = fields(read_dataset(tmp_path))
    assert got[f"{FFPP_FRAMES}/000/000.png"][2:5] == ("FaceForensics++", "DF40-ff", "train")
    cdf = "Celeb-DF-v2/Celeb-real/frames/id0_0000/000.png"
    assert got[cdf][2:5] == ("Celeb-DF-v2", "DF40-cdf", "test")
    # DeepfakeBench's FF++ and Celeb-DF alone (no DF40 fake listed): the keys name them
    (tmp_path / "preprocessing" / "dataset_json" / "simswap_ff.json").unlink()
    ffdf = listed(tmp_path, "FF-DF", "FaceForensics++/manipulated_sequences/Deepfakes/c23/frames/a")
    write_json(
        tmp_path,
        "FaceForensics++.json",
        {
            "FaceForensics++": {
                "FF-real": {"train": {"000": ff_real}},
                "FF-DF": {"train": {"a": ffdf}},
            }
        },
    )
    got = fields(read_dataset(tmp_path))
    assert got[f"{FFPP_FRAMES}/000/000.png"][3] == "FaceForensics++"
    assert got[cdf][3] == "Celeb-DF-v2"
