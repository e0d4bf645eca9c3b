"""Checkpoints round-trip exactly and nothing pickled is ever loaded."""

import hashlib
import json
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save, save_file

from mfclip_cli.files import UnsafeFileError
from mfclip_cli.model import (
    CheckpointError,
    build_model,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)
from mfclip_cli.model.backbone import BackboneError, create_clip_towers
from mfclip_cli.model.checkpoint import save_fitted
from mfclip_cli.model.config import apply_overrides


def _perturb(model):
    """Move every trainable tensor away from its initial value, as training would."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))


def test_save_load_gives_bit_identical_outputs(tiny_model, faces, tmp_path):
    _perturb(tiny_model)
    tiny_model.eval()
    path = tmp_path / "run" / "best.safetensors"
    info = save_checkpoint(tiny_model, path, metadata={"metrics": {"val_auc": 0.5}})
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()

    loaded, loaded_info = load_checkpoint(path)
    assert loaded_info.sha256 == info.sha256 and loaded_info.config == tiny_model.config
    with torch.no_grad():
        assert torch.equal(loaded(faces), tiny_model(faces))
    original = tiny_model.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, original[name]), name


def test_a_checkpoint_records_its_overrides_and_rebuilds_that_model(tiny_config, faces, tmp_path):
    config = apply_overrides(tiny_config, ["noise.enabled=false", "prompts.levels=2"])
    torch.manual_seed(0)
    model = build_model(config)
    _perturb(model)
    model.eval()
    path = tmp_path / "ablation.safetensors"
    save_checkpoint(model, path)
    loaded, info = load_checkpoint(path)
    assert info.config == config and not info.config.noise.enabled
    assert info.config.prompts.levels == 2
    assert loaded.vision.noise_branch is None and loaded.language.level_logits.shape == (2,)
    assert not any(name.startswith("vision.noise_branch.") for name in load_file(path))
    scanner, _ = load_checkpoint(path, inference=True)  # what scan and eval build
    assert scanner.vision.noise_branch is None
    with torch.no_grad():
        assert torch.equal(loaded(faces), model(faces))
        torch.testing.assert_close(scanner(faces), model(faces), atol=1e-5, rtol=1e-4)


def test_checkpoints_older_than_the_noise_and_levels_switches_still_load(
    tiny_model, faces, tmp_path
):
    """A config written before noise.enabled and prompts.levels existed means the full model."""
    _perturb(tiny_model)
    tiny_model.eval()
    path = tmp_path / "old.safetensors"
    save_checkpoint(tiny_model, path)
    with safe_open(str(path), "pt") as handle:
        header = handle.metadata()
    config = json.loads(header["config"])
    del config["noise"]["enabled"], config["prompts"]["levels"]
    path.write_bytes(save(load_file(path), metadata={**header, "config": json.dumps(config)}))
    loaded, info = load_checkpoint(path)
    assert info.config == tiny_model.config
    with torch.no_grad():
        assert torch.equal(loaded(faces), tiny_model(faces))


def test_sidecar_describes_the_checkpoint(tiny_model, tmp_path):
    path = tmp_path / "model.safetensors"
    info = save_checkpoint(tiny_model, path, metadata={"training_data": {"samples": 12}})
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["sha256"] == info.sha256 and sidecar["weights"] == "model.safetensors"
    assert sidecar["classes"] == ["real", "diffusion", "gan"]
    assert sidecar["architecture"] == "mfclip-tiny"
    assert sidecar["preprocessing"]["crop_size"] == 128
    assert sidecar["lora"] == {"rank": 4, "alpha": 8, "dropout": 0.0, "text": False}
    assert sidecar["prompts"]["real"] == "a photo of a real face"
    assert sidecar["training_data"] == {"samples": 12}
    total, trainable = tiny_model.parameter_counts()
    assert sidecar["parameters"] == {"total": total, "trainable": trainable}


def test_tensor_file_alone_rebuilds_the_model(tiny_model, faces, tmp_path):
    path = tmp_path / "model.safetensors"
    save_checkpoint(tiny_model, path)
    path.with_suffix(".json").unlink()
    loaded, _ = load_checkpoint(path)
    tiny_model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(faces), tiny_model(faces))


def test_existing_checkpoint_is_not_overwritten_unless_asked(tiny_model, tmp_path):
    path = tmp_path / "model.safetensors"
    first = save_checkpoint(tiny_model, path)
    _perturb(tiny_model)
    with pytest.raises(FileExistsError):
        save_checkpoint(tiny_model, path)
    assert read_checkpoint_info(path).sha256 == first.sha256
    assert save_checkpoint(tiny_model, path, overwrite=True).sha256 != first.sha256
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


@pytest.mark.parametrize("name", ["model.pt", "model.safetensors", "model.bin"])
def test_pickled_files_are_refused(tiny_model, tmp_path, name):
    path = tmp_path / name
    torch.save(tiny_model.state_dict(), path)
    with pytest.raises(UnsafeFileError, match="pickled"):
        load_checkpoint(path)


def test_raw_pickle_is_refused_without_being_unpickled(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    path = tmp_path / "weights.safetensors"
    path.write_bytes(pickle.dumps(Boom(), protocol=4))
    with pytest.raises(UnsafeFileError, match="pickled"):
        load_checkpoint(path)


def test_non_checkpoints_are_refused_clearly(tmp_path):
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(UnsafeFileError, match="not a safetensors file"):
        load_checkpoint(empty)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(UnsafeFileError, match="not a safetensors file"):
        load_checkpoint(junk)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not an mfclip checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.safetensors")


def _rewrite(path, target, edit):
    """Copy checkpoint ``path`` to ``target`` with its tensors edited, keeping its header
    metadata."""
    metadata = safe_open(str(path), "pt").metadata()
    state = edit(load_file(path))
    target.write_bytes(save({k: v.contiguous() for k, v in state.items()}, metadata=metadata))
    return target


def _with_a_nan(path, target, name):
    """Copy checkpoint ``path`` to ``target`` with the first value of its tensor ``name`` NaN."""

    def damaged(state):
        tensor = state[name].clone()
        tensor.view(-1)[0] = float("nan")
        return {**state, name: tensor}

    return _rewrite(path, target, damaged)


def test_tensors_not_matching_the_config_are_reported(tiny_model, tmp_path):
    path = tmp_path / "model.safetensors"
    save_checkpoint(tiny_model, path)
    name = next(k for k in tiny_model.state_dict() if "lora_A" in k)
    missing = _rewrite(
        path, tmp_path / "missing.safetensors", lambda s: {k: v for k, v in s.items() if k != name}
    )
    with pytest.raises(CheckpointError, match="does not match its config"):
        load_checkpoint(missing)
    reshaped = _rewrite(
        path, tmp_path / "reshaped.safetensors", lambda s: {**s, name: torch.zeros(1, 1)}
    )
    with pytest.raises(CheckpointError, match="does not match its config"):
        load_checkpoint(reshaped)


def test_local_clip_weights_load_from_safetensors(tiny_config, tmp_path):
    torch.manual_seed(5)
    source = create_clip_towers(tiny_config.clip)
    full = open_clip.create_model("mfclip-tiny", force_custom_text=True)
    full.visual.load_state_dict(source.visual.state_dict())
    full.text.load_state_dict(source.text.state_dict())
    weights = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, weights)

    model = build_model(tiny_config.replace(clip={"pretrained": str(weights)}))
    assert model.config.clip.pretrained == str(weights)
    images = torch.rand(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():  # LoRA starts as the identity, so the adapted tower is the loaded one
        assert torch.equal(model.vision.image_tower(images), source.visual.eval()(images))
        tokens = source.tokenizer(["a photo of a real face"])
        assert torch.equal(model.language.text_tower(tokens), source.text.eval()(tokens))

    pickled = tmp_path / "clip.pt"
    torch.save(full.state_dict(), pickled)
    with pytest.raises(UnsafeFileError, match="pickled"):
        build_model(tiny_config.replace(clip={"pretrained": str(pickled)}))


def test_unknown_tag_or_missing_file_is_a_clear_error(tiny_config):
    with pytest.raises(BackboneError, match="neither a local file nor an open_clip tag"):
        build_model(tiny_config.replace(clip={"pretrained": "no-such-tag"}))
    with pytest.raises(BackboneError, match="unknown open_clip architecture"):
        build_model(tiny_config.replace(clip={"architecture": "ViT-Q-99"}))


def test_imported_clip_weights_are_found_by_name_for_training(tiny_config, tmp_path):
    """`weights import-clip` on an open_clip cache folder; `--clip-weights NAME` builds on them."""
    from mfclip_cli.engines.weights.store import WeightsError, import_clip, resolve_clip_weights
    from mfclip_cli.model.backbone import register_open_clip_configs

    register_open_clip_configs()
    torch.manual_seed(6)
    full = open_clip.create_model("mfclip-tiny", force_custom_text=True)
    snapshot = tmp_path / "hub" / "models--someone--tiny-clip" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in full.state_dict().items()},
        snapshot / "open_clip_model.safetensors",
    )
    store = tmp_path / "store"
    entry = import_clip(tmp_path / "hub", "tiny-clip", "mfclip-tiny", store=store)
    assert entry["kind"] == "clip" and entry["architecture"] == "mfclip-tiny"
    assert entry["quick_gelu"] is False  # mfclip-tiny has no QuickGELU weights: no doubt
    path = str(store / "clip" / "tiny-clip.safetensors")
    assert resolve_clip_weights("tiny-clip", store) == {"pretrained": path, "quick_gelu": False}
    assert resolve_clip_weights("openai", store) == {"pretrained": "openai"}  # a tag passes
    registered = Path(path).read_bytes()
    Path(path).write_bytes(registered[:-1] + bytes([registered[-1] ^ 1]))
    with pytest.raises(WeightsError, match="fail their hash check"):
        resolve_clip_weights("tiny-clip", store)  # altered after it was imported
    Path(path).write_bytes(registered)
    model = build_model(tiny_config.replace(clip={"pretrained": path}))
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval().vision.image_tower(images), full.visual.eval()(images))
    weights = snapshot / "open_clip_model.safetensors"
    # OpenAI's ViT-B-16 weights use QuickGELU, LAION's GELU: a file alone leaves it open
    with pytest.raises(BackboneError, match="QuickGELU .* or with GELU"):
        import_clip(weights, "wrong", "ViT-B-16", store=store)
    with pytest.raises(BackboneError, match="QuickGELU .* or with GELU"):
        clip = {"architecture": "ViT-B-16", "pretrained": path, "quick_gelu": None}
        build_model(tiny_config.replace(clip=clip))
    with pytest.raises(BackboneError, match="could not build ViT-B-16"):  # weights of another shape
        import_clip(weights, "wrong", "ViT-B-16", quick_gelu=True, store=store)
    with pytest.raises(WeightsError, match="already registered"):
        import_clip(tmp_path / "hub", "tiny-clip", "mfclip-tiny", store=store)
    assert not (store / "clip" / "wrong.safetensors").exists()


SAVE_IN_A_NEW_PROCESS = """
import hashlib, torch
from mfclip_cli.model.checkpoint import safetensors_bytes
tensors = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(4, dtype=torch.int64)}
metadata = {key: key * 3 for key in ("format", "config", "calibration", "ood", "int8", "x")}
print(hashlib.sha256(safetensors_bytes(tensors, metadata)).hexdigest())
"""


def test_the_same_checkpoint_is_the_same_bytes_in_every_process():
    """safetensors writes its metadata in a random order per process: two identical trainings
    gave two SHA-256s, and no one could check a checkpoint by training it again."""
    digests = {
        subprocess.run(
            [sys.executable, "-c", SAVE_IN_A_NEW_PROCESS],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for _ in range(4)
    }
    assert len(digests) == 1  # with safetensors' own save (0.8.0): four different digests


def test_weights_that_are_not_finite_numbers_are_refused_at_load(tiny_model, tmp_path):
    """One NaN weight made every face's probabilities NaN; a scan reported them with a leaning,
    an attribution and ``ood: false``, exit 0 (audit R F1)."""
    path = tmp_path / "model.safetensors"
    save_checkpoint(tiny_model, path)
    name = next(k for k in tiny_model.state_dict() if k.startswith("head.") and "weight" in k)
    nan = _with_a_nan(path, tmp_path / "nan.safetensors", name)
    with pytest.raises(CheckpointError, match=rf"not finite numbers .* in {name} \(1 of the"):
        load_checkpoint(nan)
    # large but finite weights whose sum overflows float32 are looked at value by value: loaded
    large = _rewrite(
        path, tmp_path / "large.safetensors", lambda s: {**s, name: torch.full_like(s[name], 3e38)}
    )
    load_checkpoint(large)


def test_a_scoring_load_reads_no_tensor_of_the_language_encoder(tiny_model, faces, tmp_path):
    """The scoring model has no language encoder, so its tensors (260 MB of a ViT-B-16
    checkpoint) are not read: a NaN there stops the trainable load, not the scoring one, which
    gives the same probabilities as the trainable model from the intact file."""
    path = tmp_path / "model.safetensors"
    save_checkpoint(tiny_model, path)
    name = next(k for k in tiny_model.state_dict() if k.startswith("language.") and "weight" in k)
    nan = _with_a_nan(path, tmp_path / "nan.safetensors", name)
    with pytest.raises(CheckpointError, match=rf"not finite numbers .* in {name} "):
        load_checkpoint(nan)
    scoring, _ = load_checkpoint(nan, inference=True)
    trainable, _ = load_checkpoint(path)
    assert torch.allclose(scoring.predict_proba(faces), trainable.predict_proba(faces), atol=1e-5)
    # nor is a checkpoint written from it (calibrate loads to score, then copies every tensor)
    _, info = load_checkpoint(nan, inference=True)
    with pytest.raises(CheckpointError, match=rf"not finite numbers .* in {name} "):
        save_fitted(info, tmp_path / "calibrated.safetensors", calibration={"temperature": 1.5})
    assert not (tmp_path / "calibrated.safetensors").exists()


@pytest.mark.parametrize(
    "key, value",
    [("std", [0.0, 0.26, 0.27]), ("mean", [float("nan"), 0.45, 0.4]), ("crop_size", 10**6)],
)
def test_a_header_whose_preprocessing_cannot_give_numbers_is_refused(
    tiny_model, tmp_path, key, value
):
    """A std of 0 or a NaN mean gave NaN probabilities; a crop of 10**6 pixels a side an
    allocation error blamed on each input, exit 3 (audit R F1, F9)."""
    path = tmp_path / "model.safetensors"
    save_checkpoint(tiny_model, path)
    header = dict(safe_open(str(path), "pt").metadata())
    config = json.loads(header["config"])
    config["preprocess"][key] = value
    edited = tmp_path / "edited.safetensors"
    edited.write_bytes(save(load_file(path), metadata={**header, "config": json.dumps(config)}))
    with pytest.raises(CheckpointError, match=f"preprocess.{key} must be a finite number"):
        load_checkpoint(edited)


def _without_parity_samples(calibration: dict) -> dict:
    """``calibration`` with its int8 parity's sample count removed (auto's bound reads it)."""
    parity = {k: v for k, v in calibration["int8"]["parity"].items() if k != "samples"}
    return {**calibration, "int8": {**calibration["int8"], "parity": parity}}


def _hostile_variants(demo) -> dict:
    """The bundled demo checkpoint's bytes with one thing of its header or records changed."""
    from mfclip_cli.model.checkpoint import safetensors_bytes

    raw = demo.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header, data = json.loads(raw[8 : 8 + length]), raw[8 + length :]
    meta, tensors = header["__metadata__"], load_file(demo)
    first = min((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"])
    second = sorted(
        (k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"]
    )[1]

    def edited_header(key, field, value):
        changed = json.loads(json.dumps(header))
        if key == "__metadata__":
            changed[key] = value
        else:
            changed[key][field] = value
        text = json.dumps(changed).encode()
        text += b" " * (-len(text) % 8)
        return len(text).to_bytes(8, "little") + text + data

    def with_record(key, value):
        return safetensors_bytes(tensors, {**meta, key: value})

    begin, end = header[second]["data_offsets"]
    deep = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    deep += b" " * (-len(deep) % 8)
    return {
        "dtype": edited_header(first, "dtype", "F128"),
        "offsets-reversed": edited_header(first, "data_offsets", [5, 3]),
        "offsets-overlap": edited_header(second, "data_offsets", [begin - 4, end - 4]),
        "shape-vs-size": edited_header(first, "shape", [10**6, 10**6]),
        "metadata-list": edited_header("__metadata__", None, [1]),
        "deep-json": len(deep).to_bytes(8, "little") + deep,
        "calibration-list": with_record("calibration", "[1]"),
        "calibration-without-method": with_record("calibration", '{"temperature": 1.5}'),
        "negative-temperature": with_record(
            "calibration", json.dumps({**json.loads(meta["calibration"]), "temperature": -1})
        ),
        "parity-without-samples": with_record(
            "calibration", json.dumps(_without_parity_samples(json.loads(meta["calibration"])))
        ),
        "ood-record": with_record("ood", '{"bogus": 1}'),
        "training-list": with_record("training", "[1]"),
        "ood-tensors-missing": safetensors_bytes(
            {k: v for k, v in tensors.items() if not k.startswith("ood.")}, meta
        ),
        "ood-tensors-reshaped": safetensors_bytes(
            {k: torch.zeros(2) if k.startswith("ood.") else v for k, v in tensors.items()}, meta
        ),
    }


def test_a_hostile_header_or_record_is_one_error_of_ours(tmp_path):
    """Audit R F5: a header the safetensors library stopped at (its own exception), a deeply
    nested one (RecursionError) and records of the wrong shape (KeyError, TypeError,
    AttributeError) were tracebacks wherever they were first read."""
    from mfclip_cli.engines.weights.store import BUNDLED_STORE
    from mfclip_cli.scoring.attribution import attributor_of
    from mfclip_cli.scoring.ood import ood_of

    demo = BUNDLED_STORE / "mfclip-demo-tiny.safetensors"
    outcomes = {}
    for name, content in _hostile_variants(demo).items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(content)
        try:
            _, info = load_checkpoint(path, inference=True)
            ood_of(info), attributor_of(info)
            outcomes[name] = "loaded"
        except (CheckpointError, UnsafeFileError) as error:
            outcomes[name] = "ours" if str(path) in str(error) else str(error)
        except Exception as error:  # noqa: BLE001 - what the test looks for
            outcomes[name] = f"{type(error).__name__}: {error}"
    assert outcomes == dict.fromkeys(outcomes, "ours")


@pytest.mark.parametrize("replacement", ["same-names", "other-detector", "other-shapes"])
@pytest.mark.parametrize("inference", [False, True])
def test_a_checkpoint_replaced_while_loading_is_refused(
    tiny_model, tiny_config, tmp_path, monkeypatch, replacement, inference
):
    """The hash and the tensors were two reads of the path: a checkpoint replaced between them
    (a training run saving best.safetensors as a scan starts) gave a report whose SHA-256 named
    other bytes than those scored (audit R F12). Replaced once its hash is done, by a file of
    other tensor names or shapes, the read or the build failed with a traceback or blamed the
    config (audit U M1): each is the file that changed."""
    from mfclip_cli.model import build_detector, build_model, load_model_config
    from mfclip_cli.model import checkpoint as checkpoints

    path, other = tmp_path / "best.safetensors", tmp_path / "other.safetensors"
    save_checkpoint(tiny_model, path)
    torch.manual_seed(1)
    if replacement == "same-names":
        replacing = build_model(tiny_config)
    elif replacement == "other-detector":
        replacing = build_detector(load_model_config("mc-lcr-tiny"), pretrained=False)
    else:
        replacing = build_model(tiny_config.replace(lora={"rank": 8}))
    save_checkpoint(replacing, other)
    hashed, real_hash, real_read = (
        threading.Event(),
        checkpoints.sha256_file,
        checkpoints._read_tensors,
    )

    def hash_then_say(*args, **options):
        try:
            return real_hash(*args, **options)
        finally:
            hashed.set()

    def replaced_first(*args, **options):
        assert hashed.wait(30)  # the hash is over: only the tensor read sees the new file
        os.replace(other, path)  # as an atomic save lands
        return real_read(*args, **options)

    monkeypatch.setattr(checkpoints, "sha256_file", hash_then_say)
    monkeypatch.setattr(checkpoints, "_read_tensors", replaced_first)
    with pytest.raises(CheckpointError, match="changed while it was being read"):
        load_checkpoint(path, inference=inference)


@pytest.mark.parametrize("when", ["building", "waiting for the hash"])
def test_ctrl_c_during_a_load_does_not_wait_for_the_hash(tiny_model, tmp_path, monkeypatch, when):
    """The hash runs in a thread beside the build: a Ctrl-C in the build, or while the load
    waits for the hash, waited for the whole file to be hashed (audits U L1, V L1: 6 s where
    the hash of a large file took 6 s). It is told to stop, between two chunks."""
    from concurrent.futures import Future

    from mfclip_cli import files
    from mfclip_cli.model import checkpoint as checkpoints

    path = tmp_path / "model.safetensors"
    save_checkpoint(tiny_model, path)
    chunks = []
    real_open = files.open_regular

    def slow_open(name, *args, **options):
        handle, kind = real_open(name, *args, **options)

        class Slow:  # a disk that gives a chunk every 0.2 s
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                handle.close()

            def read(self, size):  # 15 slow chunks (3 s), then the rest at once
                chunks.append(size)
                if len(chunks) <= 15:
                    time.sleep(0.2)
                    return handle.read(4096)
                return handle.read()

        return Slow(), kind

    def interrupted(*args, **options):
        time.sleep(0.3)
        raise KeyboardInterrupt

    monkeypatch.setattr(files, "open_regular", slow_open)
    if when == "building":
        monkeypatch.setattr(checkpoints, "_built", interrupted)
    else:  # the build is done, the Ctrl-C comes while the result of the hash is awaited
        monkeypatch.setattr(Future, "result", interrupted)
    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        load_checkpoint(path)
    assert time.perf_counter() - started < 2.0  # the whole hash: 3 s
    assert len(chunks) < 10
    assert not [t for t in threading.enumerate() if t.name.startswith("mfclip-sha256")]


def test_no_module_made_on_the_meta_device_keeps_a_tensor_from_it():
    """A checkpoint's load builds its model on torch's meta device first, which imports the
    model's modules (open_clip and peft included) under that device: a tensor a module makes
    when imported would be a meta tensor, without data, for the rest of the process (the SRM
    kernels were)."""
    script = """
import importlib, pkgutil, sys, torch
import mfclip_cli.model as package
with torch.device("meta"):
    import open_clip, peft
    for module in pkgutil.walk_packages(package.__path__, "mfclip_cli.model."):
        importlib.import_module(module.name)
print([f"{name}.{attribute}" for name, module in list(sys.modules.items())
       if name.startswith(("mfclip_cli", "open_clip", "peft"))
       for attribute, value in vars(module).items()
       if isinstance(value, torch.Tensor) and value.is_meta])
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["tiny", "clip-probe-tiny", "mc-lcr-tiny"])
@pytest.mark.parametrize("inference", [False, True])
def test_a_load_that_skips_random_initialisation_gives_every_tensor_as_before(
    tmp_path, monkeypatch, name, inference
):
    """A load builds its model with torch.nn.init's initialisers skipped, since the checkpoint
    overwrites every parameter and stored buffer. Whatever a build computes otherwise (buffers
    outside the state dict: normalisation constants, attention masks) must come out as a load
    that draws random weights makes it, for each detector, trainable or for scoring."""
    import contextlib

    from mfclip_cli.model import checkpoint
    from mfclip_cli.model.config import load_model_config
    from mfclip_cli.model.detectors import build_detector

    torch.manual_seed(0)
    path = tmp_path / "model.safetensors"
    save_checkpoint(build_detector(load_model_config(name), pretrained=False), path)

    def tensors(model):
        named = dict(model.named_parameters())
        named.update(model.named_buffers())  # the ones no state dict holds included
        return named

    skipped, _ = load_checkpoint(path, inference=inference)
    monkeypatch.setattr(checkpoint, "_initialisers_skipped", contextlib.nullcontext)
    drawn, _ = load_checkpoint(path, inference=inference)
    ours, theirs = tensors(skipped), tensors(drawn)
    assert ours.keys() == theirs.keys()
    for key, tensor in theirs.items():
        assert torch.equal(ours[key], tensor), key


def test_a_checkpoint_stored_in_half_precision_loads_in_the_models_own(tmp_path, tiny_model):
    """The file's tensors become the model's (no second copy): in the dtype the model was built
    with, so a checkpoint re-saved in float16 scores in float32 as before, to float16 rounding."""
    path = tmp_path / "model.safetensors"
    save_checkpoint(tiny_model, path)
    with safe_open(str(path), "pt") as handle:
        header = dict(handle.metadata())
    half = tmp_path / "half.safetensors"
    save_file({k: v.half() for k, v in load_file(str(path)).items()}, str(half), metadata=header)
    full, _ = load_checkpoint(path, inference=True)
    halved, _ = load_checkpoint(half, inference=True)
    assert {t.dtype for t in halved.state_dict().values() if t.is_floating_point()} == {
        torch.float32
    }
    faces = torch.rand(2, 3, tiny_model.crop_size, tiny_model.crop_size)
    with torch.no_grad():
        assert torch.allclose(full.predict_proba(faces), halved.predict_proba(faces), atol=1e-2)


def test_skipped_initialisers_touch_only_the_loading_thread_and_come_back():
    """Audit S2 F6: two loads overlapping in threads left torch.nn.init's initialisers swapped
    for good, and any model built meanwhile got uninitialised weights. A model another thread
    builds during a load is initialised as ever, loads take turns, and the initialisers are
    torch's own again afterwards."""
    import threading

    from torch.nn import init

    from mfclip_cli.model.checkpoint import _initialisers_skipped

    original = init.kaiming_uniform_
    torch.manual_seed(0)
    reference = torch.nn.Linear(8, 8).weight.detach().clone()
    inside, release, built = threading.Event(), threading.Event(), {}

    def load():
        with _initialisers_skipped():
            inside.set()
            release.wait(10)

    def other_load():
        with _initialisers_skipped():
            built["skipped"] = torch.nn.Linear(8, 8).weight.detach().clone()

    first = threading.Thread(target=load)
    first.start()
    assert inside.wait(10)
    second = threading.Thread(target=other_load)
    second.start()  # waits for the first load's turn to end
    torch.manual_seed(0)
    assert torch.equal(torch.nn.Linear(8, 8).weight, reference)  # this thread: initialised
    release.set()
    first.join(10)
    second.join(10)
    assert "skipped" in built and init.kaiming_uniform_ is original


def test_a_loaded_model_keeps_its_weights_when_the_file_is_rewritten_in_place(tmp_path):
    """The file's tensors become the model's parameters: read from a mapping of the file, they
    followed a rewrite of it in place (cp over it, rsync --inplace) while the report still
    named the old SHA-256, and a truncation killed the process (SIGBUS) (audit S3 N1)."""
    from mfclip_cli.model.config import load_model_config
    from mfclip_cli.model.detectors import build_detector

    torch.manual_seed(0)
    path = tmp_path / "model.safetensors"
    save_checkpoint(build_detector(load_model_config("tiny"), pretrained=False), path)
    model, _ = load_checkpoint(path, inference=True)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    header = 8 + int.from_bytes(path.read_bytes()[:8], "little")
    with open(path, "r+b") as handle:  # every tensor's bytes zeroed, in place
        handle.seek(header)
        handle.write(bytes(path.stat().st_size - header))
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    with open(path, "r+b") as handle:
        handle.truncate(header)
    faces = torch.rand(1, 3, model.crop_size, model.crop_size)
    with torch.no_grad():
        assert torch.isfinite(model.predict_proba(faces)).all()


def test_the_fitted_tensors_a_scan_keeps_stay_when_the_file_is_rewritten_in_place(tmp_path):
    """The out-of-distribution statistics a scan keeps were tensors mapped from the checkpoint
    (audit S3 N1's mechanism): read into memory of their own, they stay as read."""
    import shutil

    from mfclip_cli.engines.weights.store import BUNDLED_STORE
    from mfclip_cli.model.checkpoint import read_fitted_tensors

    path = tmp_path / "demo.safetensors"
    shutil.copyfile(BUNDLED_STORE / "mfclip-demo-tiny.safetensors", path)
    kept = read_fitted_tensors(path, "ood.")
    before = {name: tensor.clone() for name, tensor in kept.items()}
    header = 8 + int.from_bytes(path.read_bytes()[:8], "little")
    with open(path, "r+b") as handle:
        handle.seek(header)
        handle.write(bytes(path.stat().st_size - header))
    assert before and all(torch.equal(before[name], kept[name]) for name in before)
