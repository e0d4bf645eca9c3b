"""No build-machine path in what a checkpoint records: its data by name and digest, its run's
folders and a local CLIP file by name (issue 31). conftest.py checks every checkpoint the tests
write the same way once the session ends."""

import json
import shutil

import pytest
from build_paths import BUNDLED_DEMO, absolute_paths, checkpoint_build_paths

from mfclip_cli.data import Sample, read_dataset, read_datasets, write_manifest
from mfclip_cli.data.identity import dataset_identity
from mfclip_cli.engines.train.settings import TrainSettings
from mfclip_cli.engines.train.training import portable_settings
from mfclip_cli.engines.weights.store import BUNDLED_STORE, read_registry
from mfclip_cli.model.checkpoint import portable_config, sidecar_path


def test_the_bundled_demo_records_no_absolute_path():
    # the sidecar ships too, and is checked with the header
    assert sidecar_path(BUNDLED_DEMO).is_file()
    assert checkpoint_build_paths(BUNDLED_DEMO) == []
    assert absolute_paths(read_registry(BUNDLED_STORE)) == []
    calibration = json.loads(sidecar_path(BUNDLED_DEMO).read_text())["calibration"]
    assert set(calibration["fitted_on"]["data"]) == {"name", "samples", "index_sha256"}


def test_the_finder_sees_paths_inside_header_json():
    header = {"calibration": json.dumps({"fitted_on": {"data": "/tmp/demo/faces"}}), "n": "1 / n"}
    assert absolute_paths(header, "header") == [
        "header.calibration.fitted_on.data: /tmp/demo/faces"
    ]
    assert absolute_paths(["C:\\data\\faces", "~/faces", "faces/a.png", "fpr:0.01"]) == [
        "[0]: C:\\data\\faces",
        "[1]: ~/faces",
    ]


def _dataset(root):
    samples = [
        Sample(path=f"{label}/{i}.png", label=label) for label in ("real", "gan") for i in (0, 1)
    ]
    write_manifest(root / "manifest.jsonl", samples)
    return root


def test_a_dataset_is_named_by_its_folder_and_digest_wherever_it_lies(tmp_path):
    here = read_dataset(_dataset(tmp_path / "a" / "faces"))
    moved = tmp_path / "elsewhere" / "faces"
    shutil.copytree(tmp_path / "a" / "faces", moved)
    identity = dataset_identity(here)
    assert identity == dataset_identity(read_dataset(moved))
    assert identity["name"] == "faces" and identity["samples"] == 4
    assert absolute_paths(identity) == []
    # relabelling a sample is another dataset
    (moved / "manifest.jsonl").write_text(
        (moved / "manifest.jsonl").read_text().replace('"label": "gan"', '"label": "real"', 1)
    )
    assert dataset_identity(read_dataset(moved))["index_sha256"] != identity["index_sha256"]


def test_several_data_are_named_by_their_folders(tmp_path):
    for name in ("alpha", "beta"):
        _dataset(tmp_path / "sets" / name)
    index = read_datasets([tmp_path / "sets" / "alpha", tmp_path / "sets" / "beta"])
    identity = dataset_identity(index)
    assert identity["name"] == "sets" and identity["samples"] == 8
    assert [(source["name"], source["prefix"]) for source in identity["sources"]] == [
        ("alpha", "alpha"),
        ("beta", "beta"),
    ]
    assert absolute_paths(identity) == []


def test_run_settings_and_local_pretrained_files_are_recorded_by_name(tmp_path):
    clip = tmp_path / "clip" / "ViT-B-16.safetensors"
    clip.parent.mkdir()
    clip.write_bytes(b"")
    label_map = tmp_path / "labels.toml"
    label_map.write_text("")
    settings = TrainSettings(
        data=str(tmp_path / "faces"),
        out=str(tmp_path / "run"),
        clip_weights=str(clip),
        label_map=str(label_map),
    )
    recorded = portable_settings(settings)
    assert (recorded["data"], recorded["out"], recorded["clip_weights"]) == (
        "faces",
        "run",
        "ViT-B-16.safetensors",
    )
    assert recorded["label_map"] == "labels.toml" and recorded["protocol"] == "in-domain"
    several = TrainSettings(data=(str(tmp_path / "a"), str(tmp_path / "b")), out="r")
    assert portable_settings(several)["data"] == ["a", "b"]
    assert (
        portable_settings(TrainSettings(data="d", out="r", clip_weights="openai"))["clip_weights"]
        == "openai"
    )  # an open_clip tag is no path
    config = {"clip": {"architecture": "ViT-B-16", "pretrained": str(clip)}, "head": {"hidden": 2}}
    assert portable_config(config) == {
        "clip": {"architecture": "ViT-B-16", "pretrained": "ViT-B-16.safetensors"},
        "head": {"hidden": 2},
    }
    assert portable_config({"clip": {"pretrained": "openai"}}) == {"clip": {"pretrained": "openai"}}


@pytest.mark.parametrize("name", ["header", "sidecar"])
def test_a_checkpoint_with_a_build_path_is_caught(weights, tmp_path, name):
    from safetensors.torch import load_file, save

    from mfclip_cli.files import check_safetensors

    copy = tmp_path / "copy.safetensors"
    header = dict(check_safetensors(weights)["__metadata__"])
    sidecar = json.loads(sidecar_path(weights).read_text())
    if name == "header":
        header["calibration"] = json.dumps({"fitted_on": {"data": str(tmp_path)}})
    else:
        sidecar["training"] = {"data": {"root": str(tmp_path)}}
    copy.write_bytes(save(load_file(str(weights)), metadata=header))
    sidecar_path(copy).write_text(json.dumps(sidecar))
    assert checkpoint_build_paths(copy) == [
        f"{name}.{'calibration.fitted_on.data' if name == 'header' else 'training.data.root'}: "
        f"{tmp_path}"
    ]
    copy.unlink()  # the session's own check would rightly flag it
