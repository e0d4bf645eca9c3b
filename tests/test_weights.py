"""The bundled demo checkpoint and the registry: hashes, lookup, and the README's quick start."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli import MFCLIP, mfclip
from report_schemas import check_scan_lines

from mfclip_cli.engines.weights.store import (
    BUNDLED_STORE,
    WeightsError,
    load_weights,
    read_registry,
    register_weights,
    remove_weights,
    resolve_weights,
    user_store,
    weights_info,
)
from mfclip_cli.errors import UsageError
from mfclip_cli.model import build_model, save_checkpoint

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_demo_checkpoint_matches_its_registry_entry():
    entries = read_registry(BUNDLED_STORE)
    demo = [entry for entry in entries if entry.get("demo")]
    assert len(demo) == 1 and demo[0]["default"] and demo[0]["config"] == "tiny"
    path = BUNDLED_STORE / demo[0]["file"]
    assert path.stat().st_size <= 20 * 1024 * 1024
    assert hashlib.sha256(path.read_bytes()).hexdigest() == demo[0]["sha256"]
    assert demo[0]["trained_on"] and demo[0]["metrics"]["test"]["auc"] is not None
    assert json.loads(path.with_suffix(".json").read_text())["demo"] is True


def test_register_and_verify(tmp_path, tiny_config):
    source = tmp_path / "run" / "best.safetensors"
    save_checkpoint(build_model(tiny_config), source)
    folder = tmp_path / "weights"
    # nothing of the user's: the bundled default
    assert resolve_weights(None, folder).name == "mfclip-demo-tiny"
    entry = register_weights(source, "mine", default=True, trained_on="nothing", store=folder)
    assert entry["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert resolve_weights(None, folder).name == "mine"  # the user's default comes first
    assert weights_info("mine", folder)["hash_check"] == "matches the registry"
    assert resolve_weights("mfclip-demo-tiny", folder).path.parent == BUNDLED_STORE
    with pytest.raises(WeightsError, match="already registered"):
        register_weights(source, "mine", store=folder)
    with pytest.raises(WeightsError, match="names bundled weights"):
        register_weights(source, "mfclip-demo-tiny", store=folder)
    register_weights(source, "other", default=True, store=folder)
    assert [e["default"] for e in read_registry(folder)] == [False, True]
    removed = remove_weights("other", folder)
    assert removed["name"] == "other" and not (folder / "other.safetensors").exists()
    assert not (folder / "other.json").exists() and [e["name"] for e in read_registry(folder)] == [
        "mine"
    ]
    with pytest.raises(WeightsError, match="bundled"):
        remove_weights("mfclip-demo-tiny", folder)
    # altered after registration: refused where it is read, as altered, whether its bytes
    # still load (a changed tensor value) or not (cut short)
    tampered = folder / "mine.safetensors"
    original = tampered.read_bytes()
    for altered in (original[:-1] + bytes([original[-1] ^ 1]), original[:-100]):
        tampered.write_bytes(altered)
        for read in (
            lambda: load_weights(resolve_weights("mine", folder), torch.device("cpu")),
            lambda: weights_info("mine", folder),
        ):
            with pytest.raises(WeightsError, match="fail their hash check"):
                read()
    tampered.write_bytes(original)
    # a training run's folder named where its checkpoint was meant: it said "not found"
    run = tmp_path / "training-run"
    run.mkdir()
    for name in ("best.safetensors", "last.safetensors", "last.state.safetensors"):
        (run / name).write_bytes(b"")
    with pytest.raises(WeightsError, match=r"is a folder, not a checkpoint file: name a "):
        resolve_weights(str(run), folder)
    with pytest.raises(WeightsError) as named:
        resolve_weights(str(run), folder)
    assert f"({run}/best.safetensors, {run}/last.safetensors)" in str(named.value)
    assert not any(BUNDLED_STORE.glob("mine*")) and read_registry(BUNDLED_STORE) == [
        e for e in read_registry(BUNDLED_STORE) if e["name"] == "mfclip-demo-tiny"
    ]


def test_a_registered_checkpoint_is_hashed_once_to_be_scanned(tmp_path, tiny_config, monkeypatch):
    """Resolving a registered name hashed the file, then the load hashed it again: a 600 MB
    checkpoint read twice more than needed on every scan. It is hashed once, as it is loaded,
    and that hash is compared with the registry's."""
    from mfclip_cli import files
    from mfclip_cli.model import checkpoint

    source = tmp_path / "best.safetensors"
    save_checkpoint(build_model(tiny_config), source)
    register_weights(source, "mine", store=tmp_path / "store")
    hashed = []

    def counted(path, *args, **kwargs):
        hashed.append(Path(path).name)
        return files.sha256_file(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "sha256_file", counted)
    monkeypatch.setattr("mfclip_cli.engines.weights.store.sha256_file", counted)
    loaded = load_weights(resolve_weights("mine", tmp_path / "store"), torch.device("cpu"))
    assert (
        hashed == ["mine.safetensors"]
        and loaded.info.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    )


def test_weights_add_list_and_remove_use_the_users_store(tmp_path, tiny_config):
    source = tmp_path / "best.safetensors"
    save_checkpoint(build_model(tiny_config), source)
    home = {"MFCLIP_HOME": str(tmp_path / "home")}
    added = mfclip("weights", "add", str(source), "--name", "case-17", env=home)
    assert added.returncode == 0, added.stderr
    assert (tmp_path / "home" / "weights" / "case-17.safetensors").is_file()
    listed = mfclip("weights", "list", env={**home, "COLUMNS": "200"})
    assert listed.returncode == 0, listed.stderr
    rows = {
        line.split("│")[1].strip(): line
        for line in listed.stdout.splitlines()
        if line.count("│") > 5
    }
    assert (
        "user" in rows["case-17"]
        and "bundled" in rows["mfclip-demo-tiny"]
        and "MB" in rows["case-17"]
    )
    # audit S F11: on 80 columns (a pipe, a CI log) a mismatch showed as "MIS…", and both the
    # user's default and the bundled one said "default: yes"
    assert (
        mfclip("weights", "add", str(source), "--name", "mine", "--default", env=home).returncode
        == 0
    )
    tampered = tmp_path / "home" / "weights" / "mine.safetensors"
    tampered.write_bytes(tampered.read_bytes() + b" ")
    narrow = mfclip("weights", "list", env={**home, "COLUMNS": "80"})
    assert narrow.returncode == 0 and "MISMATCH" in narrow.stdout, narrow.stdout
    assert "…" not in narrow.stdout and "overridden" in narrow.stdout
    removed = mfclip("weights", "remove", "case-17", env=home)
    assert (
        removed.returncode == 0
        and not (tmp_path / "home" / "weights" / "case-17.safetensors").exists()
    )
    refused = mfclip("weights", "remove", "mfclip-demo-tiny", env=home)
    assert refused.returncode == 1 and "bundled" in refused.stderr
    assert user_store() != BUNDLED_STORE and "mfclip" in str(BUNDLED_STORE)


def test_weights_list_and_info_commands():
    listed = mfclip("weights", "list")
    assert listed.returncode == 0, listed.stderr
    assert "mfclip-demo-tiny" in listed.stdout and "ok" in listed.stdout
    info = mfclip("weights", "info", "mfclip-demo-tiny")
    assert info.returncode == 0, info.stderr
    document = json.loads(info.stdout)
    assert document["demo"] is True and document["hash_check"] == "matches the registry"
    assert document["training"]["protocol"]["name"] == "in-domain"


def test_quick_start_scan_of_the_examples_with_the_demo_weights():
    result = mfclip("scan", str(EXAMPLES), "--jsonl", "-", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "DEMO" in result.stderr
    lines = check_scan_lines(result.stdout.splitlines())
    assert lines[0]["type"] == "meta" and lines[0]["demo"] is True
    assert lines[-1] == {**lines[-1], "type": "end", "complete": True, "files_written": 7}
    files = {Path(line["path"]).name: line for line in lines[1:-1]}
    labels = {name: [face["label"] for face in record["faces"]] for name, record in files.items()}
    assert labels["astronaut.jpg"] == ["real"]
    assert labels["astronaut_exif_rotated.jpg"] == ["real"]
    assert labels["astronaut_synthetic_gan.png"] == ["gan"]
    assert labels["astronaut_synthetic_diffusion.png"] == ["diffusion"]
    assert len(labels["mosaic_four_faces.jpg"]) == 4
    assert files["no_face.jpg"]["status"] == "no_face"
    video = files["astronaut_clip.mp4"]
    assert video["video"]["frames_sampled"] >= 2 and all("frame" in face for face in video["faces"])


def test_demo_status_follows_the_hash_not_the_sidecar_or_the_name(tmp_path):
    """The demo checkpoint copied without its sidecar, or registered under another name, is still
    the demo."""
    demo = next(entry for entry in read_registry(BUNDLED_STORE) if entry.get("demo"))
    bare = tmp_path / "renamed.safetensors"
    bare.write_bytes((BUNDLED_STORE / demo["file"]).read_bytes())
    scanned = mfclip(
        "scan", str(EXAMPLES / "astronaut.jpg"), "--weights", str(bare), "--jsonl", "-", "--quiet"
    )
    assert scanned.returncode == 0, scanned.stderr
    assert (
        "DEMO" in scanned.stderr
        and check_scan_lines(scanned.stdout.splitlines())[0]["demo"] is True
    )
    assert weights_info(str(bare))["demo"] is True
    entry = register_weights(bare, "mine", store=tmp_path / "store")
    assert entry["demo"] is True and resolve_weights("mine", tmp_path / "store").demo is True
    assert json.loads((tmp_path / "store" / "mine.json").read_text())["demo"] is True


def test_the_demo_network_under_other_header_bytes_is_the_demo_still(tmp_path):
    """A plain safetensors re-save (metadata in another order), a relabelled version or stripped
    records gave the demo's network another SHA-256, and the scan said nothing of demo weights
    (audit R F2): its network hash is registered and compared. A damaged user registry does not
    stop a scan of a path (audit R F4)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save

    from mfclip_cli.model.checkpoint import network_sha256

    demo = next(entry for entry in read_registry(BUNDLED_STORE) if entry.get("demo"))
    source = BUNDLED_STORE / demo["file"]
    assert network_sha256(source) == demo["network_sha256"]
    header = dict(safe_open(str(source), "pt").metadata())
    relabelled = {k: v for k, v in header.items() if k not in ("calibration", "training")}
    copy = tmp_path / "converted.safetensors"
    copy.write_bytes(save(load_file(source), metadata={**relabelled, "mfclip_version": "9.9.9"}))
    assert hashlib.sha256(copy.read_bytes()).hexdigest() != demo["sha256"]
    home = tmp_path / "home"
    (home / "weights").mkdir(parents=True)
    (home / "weights" / "registry.json").write_text('{"weights": [')  # half-written
    scanned = mfclip(
        "scan", str(EXAMPLES / "astronaut.jpg"), "--weights", str(copy), "--jsonl", "-",
        env={"MFCLIP_HOME": str(home)},
    )  # fmt: skip
    assert scanned.returncode == 0, scanned.stderr[-2000:]
    assert "DEMO" in scanned.stderr
    assert check_scan_lines(scanned.stdout.splitlines())[0]["demo"] is True
    # another network of the demo's shape is not the demo
    tensors = load_file(source)
    name = next(k for k in tensors if k.startswith("head."))
    tensors[name] = tensors[name] + 1e-3
    other = tmp_path / "other.safetensors"
    other.write_bytes(save(tensors, metadata=relabelled))
    assert weights_info(str(other))["demo"] is False


def test_truncated_checkpoint_is_one_readable_error(tmp_path):
    demo = next(entry for entry in read_registry(BUNDLED_STORE) if entry.get("demo"))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes((BUNDLED_STORE / demo["file"]).read_bytes()[:-1000])
    for args in (
        ["weights", "info", str(cut)],
        ["scan", str(EXAMPLES / "astronaut.jpg"), "--weights", str(cut), "--jsonl", "-"],
    ):
        result = mfclip(*args)
        assert result.returncode == 1, (args, result.stderr)
        assert "truncated" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_the_cli_and_the_registry_do_not_import_torch():
    """`mfclip --help` and `weights list` must start fast: torch, open_clip and the faces load
    only when used."""
    code = (
        "import sys, mfclip_cli.cli, mfclip_cli.engines.weights.store as weights; "
        "weights.registry_status(); "
        "heavy = sorted(m for m in ('torch', 'open_clip', 'facenet_pytorch', 'cv2') "
        "if m in sys.modules); "
        "assert not heavy, heavy"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    listed = mfclip("weights", "list")
    assert listed.returncode == 0 and "mfclip-demo-tiny" in listed.stdout


def test_weights_add_records_only_its_own_single_eval_report(tmp_path, tiny_config):
    source = tmp_path / "best.safetensors"
    info = save_checkpoint(build_model(tiny_config), source)
    metrics = {"n": 10, "auc": 0.75}
    report = {
        "type": "eval",
        "weights": {"sha256": info.sha256},
        "protocol": {"name": "in-domain"},
        "overall": metrics,
        "subsets": {},
    }
    good, other, comparison, broken, overlap, seen = (tmp_path / f"{n}.json" for n in "abcdef")
    held_out = {"protocol": "in-domain", "train": 0, "val": 0}
    good.write_text(
        json.dumps({**report, "protocol": {"name": "in-domain", "training_overlap": held_out}})
    )
    other.write_text(json.dumps({**report, "weights": {"sha256": "f" * 64}}))
    # scored with --allow-training-overlap: figures on faces it trained on (audit Y F7)
    trained_on = {**held_out, "train": 46, "val": 5}
    overlap.write_text(
        json.dumps({**report, "protocol": {"name": "x", "training_overlap": trained_on}})
    )
    # a cross-generator figure of generators it trained on (audit AI F3)
    trained_generators = {"values": ["sdxl"], "exact": True}
    cross = {"name": "cross-generator", "training_overlap": held_out}
    seen.write_text(
        json.dumps({**report, "protocol": {**cross, "held_out_trained": trained_generators}})
    )
    # test files holding the bytes of files it trained on, under other names (2.23.0)
    copied = tmp_path / "copied.json"
    copies = {"train": 2, "val": 2, "samples": 2, "compared": 40, "unreadable": 0, "files": []}
    copied.write_text(
        json.dumps(
            {**report, "protocol": {**cross, "held_out_trained": None, "trained_copies": copies}}
        )
    )
    comparison.write_text(json.dumps({"type": "eval-comparison", "comparison": {}}))
    broken.write_text("{not json")
    home = {"MFCLIP_HOME": str(tmp_path / "home")}
    added = mfclip("weights", "add", str(source), "--name", "ok", "--eval", str(good), env=home)
    assert added.returncode == 0, added.stderr
    (entry,) = read_registry(tmp_path / "home" / "weights")
    assert entry["metrics"]["test"] == metrics
    malformed = []  # tracebacks, or accepted and then breaking every `weights list` (audit R F10)
    for k, (edit, reason) in enumerate(
        [
            ({"protocol": "x"}, "its protocol is not an object"),
            ({"overall": {"auc": "high"}}, "the auc of its overall is 'high', not a number"),
            ({"subsets": {"a": [1]}}, "its subset 'a' is not an object"),
            ({"weights": {"sha256": 5}}, "it names no checkpoint"),
            ({"weights": {}}, "it names no checkpoint"),
            ({"protocol": {"training_overlap": [1]}}, "not a well-formed mfclip eval report"),
        ]
    ):
        path = tmp_path / f"malformed{k}.json"
        path.write_text(json.dumps({**report, **edit}))
        malformed.append((path, reason))
    for report_file, reason in [
        (other, "scored checkpoint ffffffffffff"),
        (comparison, "not the JSON report of a single-checkpoint"),
        (broken, "cannot read it as a JSON report"),
        (overlap, "scored 51 test sample(s) the checkpoint was trained or selected with"),
        (seen, "holds out sdxl under cross-generator, which the checkpoint trained on"),
        (copied, "scored 2 test sample(s) holding the bytes of files the checkpoint"),
        *malformed,
    ]:
        refused = mfclip(
            "weights", "add", str(source), "--name", "no", "--eval", str(report_file), env=home
        )
        assert refused.returncode == 2 and reason in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    assert [e["name"] for e in read_registry(tmp_path / "home" / "weights")] == ["ok"]


@pytest.mark.parametrize(
    "name",
    [
        "../escape", "sub/dir", "", ".hidden", "registry", "a\\b",
        "two\nlines", "x.safetensors", "Mine.SafeTensors", "n" * 240,
    ],
)  # fmt: skip
def test_a_name_that_is_no_file_name_of_the_store_is_refused(tmp_path, tiny_config, name):
    """A name becomes NAME.safetensors and NAME.json in the store: '../escape' wrote outside it,
    'registry' overwrote the registry (and its removal deleted it); a newline broke `weights
    list`, a file 'x.safetensors' here was read in place of the name (audit R F8), and a name
    too long for a file name was exit 1, "File name too long" (audit R F15)."""
    source = tmp_path / "source" / "best.safetensors"
    source.parent.mkdir()
    save_checkpoint(build_model(tiny_config), source)
    store = tmp_path / "home" / "store"
    with pytest.raises(UsageError, match="cannot name weights"):
        register_weights(source, name, store=store)
    assert not (tmp_path / "home").exists()  # nothing written, in the store or beside it


@pytest.mark.parametrize(
    "text",
    [
        '{"weights": null}',
        '{"weights": 5}',
        '{"weights": [{"name": "x"}]}',
        '{"weights": [{"file": "x.safetensors"}]}',
        '{"weights": [{"name": "x", "file": "x.safetensors"}]}',  # no SHA-256: used unchecked
        '{"weights": [{"name": "x", "file": "x.st", "sha256": "%s", "default": "false"}]}'
        % ("a" * 64),
        '{"weights": [{"name": "x", "file": "../x.st", "sha256": "%s"}]}' % ("a" * 64),
        '{"weights": ["x"]}',
        "[]",
        "\udcff\udcfe",
    ],
)
def test_a_registry_edited_by_hand_is_one_error_naming_it(tmp_path, text):
    store = tmp_path / "store"
    store.mkdir()
    (store / "registry.json").write_bytes(os.fsencode(text))
    with pytest.raises(WeightsError, match=r"weights registry .*registry.json is unreadable"):
        read_registry(store)
    listed = mfclip("weights", "list", env={"MFCLIP_HOME": str(tmp_path)})
    assert listed.returncode in (0, 1) and "Traceback" not in listed.stderr


def test_an_entry_failing_the_checks_can_be_removed_and_odd_figures_listed(tmp_path):
    """An entry the registry checks refuse blocked its own removal, and a test AUC that was no
    number broke every `weights list` (audit R2 M2, R F10)."""
    store = tmp_path / "weights"
    store.mkdir()
    entries = [
        {"name": "bad", "file": "bad.safetensors"},  # no SHA-256: refused for use
        {
            "name": "odd",
            "file": "odd.safetensors",
            "sha256": "a" * 64,
            "metrics": {"test": {"auc": "0.43"}},
        },
    ]
    (store / "registry.json").write_text(json.dumps({"weights": entries}))
    home = {"MFCLIP_HOME": str(tmp_path)}
    removed = mfclip("weights", "remove", "bad", env=home)
    assert removed.returncode == 0 and "removed bad" in removed.stderr, removed.stderr
    listed = mfclip("weights", "list", env=home)
    assert listed.returncode in (0, 1) and "Traceback" not in listed.stderr, listed.stderr
    assert "odd" in listed.stdout


def test_a_name_of_the_longest_length_registers(tmp_path, tiny_config):
    """The longest file a registration writes is an atomic write's temporary file, 26 bytes
    longer than the name: names of 230-237 bytes passed the check and then failed with "File
    name too long" (audit R2 M1)."""
    source = tmp_path / "best.safetensors"
    save_checkpoint(build_model(tiny_config), source)
    assert register_weights(source, "n" * 200, store=tmp_path / "store")["name"] == "n" * 200
    with pytest.raises(UsageError, match="at most 200 bytes"):
        register_weights(source, "n" * 201, store=tmp_path / "store")


def test_a_name_typed_with_a_combining_accent_is_the_same_name(tmp_path, tiny_config):
    """ "café" with one letter (NFC) and with "e" and a combining accent (NFD, as macOS file
    names give it) looked alike and were two names: the registered one was not found, and a
    second registration under the other form stood beside it (audit R F15)."""
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    source = tmp_path / "best.safetensors"
    save_checkpoint(build_model(tiny_config), source)
    store = tmp_path / "store"
    assert register_weights(source, decomposed, store=store)["name"] == composed
    found = resolve_weights(decomposed, store)
    assert found.name == composed and found.path == store / f"{composed}.safetensors"
    with pytest.raises(WeightsError, match="already registered"):
        register_weights(source, composed, store=store)
    # an entry written before names were kept composed is found and removed under either form
    entries = read_registry(store)
    entries[0]["name"] = decomposed
    (store / "registry.json").write_text(json.dumps({"weights": entries}))
    assert resolve_weights(composed, store).name == decomposed
    # --force under the other form would orphan its files (audit S2 F3): refused
    with pytest.raises(WeightsError, match="in another Unicode form: remove them first"):
        register_weights(source, composed, store=store, force=True)
    assert remove_weights(composed, store=store)["name"] == decomposed
    assert read_registry(store) == [] and not list(store.glob("*.safetensors"))


def test_names_registered_in_both_unicode_forms_before_stay_apart(tmp_path, tiny_config):
    """Before names were normalised, "café" could be registered twice, once in each form, two
    checkpoints. Each is still the one its exact spelling names: a scan did not switch to the
    other, nor did `weights remove` delete the other's files (audit S2 F1, F2)."""
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    store = tmp_path / "store"
    entries = []
    for name in (composed, decomposed):
        model = build_model(tiny_config)
        source = tmp_path / f"{name}.safetensors"
        save_checkpoint(model, source)
        entries += [register_weights(source, f"n{len(entries)}", store=store)]
    files = [store / entry["file"] for entry in entries]
    for entry, name in zip(entries, (composed, decomposed)):
        entry["name"] = name
    (store / "registry.json").write_text(json.dumps({"weights": entries}))
    assert resolve_weights(composed, store).path == files[0]
    assert resolve_weights(decomposed, store).path == files[1]
    remove_weights(decomposed, store=store)
    assert files[0].is_file() and not files[1].exists()
    assert [entry["name"] for entry in read_registry(store)] == [composed]
    # two spellings, neither the one typed: neither is taken for the other
    entries[0]["name"], entries[1]["name"] = "a\u0323\u0302", "a\u0302\u0323"
    (store / "registry.json").write_text(json.dumps({"weights": entries}))
    with pytest.raises(WeightsError, match="names several registered weights"):
        resolve_weights("\u1ead", store)


def test_registrations_made_at_once_all_land(tmp_path, tiny_config):
    source = tmp_path / "best.safetensors"
    save_checkpoint(build_model(tiny_config), source)
    home = {**os.environ, "MFCLIP_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    adding = [
        subprocess.Popen(
            [MFCLIP, "weights", "add", str(source), "--name", f"c{i}"],
            env=home,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in range(4)
    ]
    assert all(process.wait(timeout=600) == 0 for process in adding)
    names = {entry["name"] for entry in read_registry(tmp_path / "home" / "weights")}
    assert names == {"c0", "c1", "c2", "c3"}


def test_a_sidecar_naming_other_weights_is_left_out(tmp_path, tiny_config):
    """Audit S F2: a checkpoint copied over another's, the old sidecar left beside it: the
    sidecar's training record (another run's data) replaced the one in the checkpoint, and eval's
    held-out check was off without a word. A sidecar that names another SHA-256 is left out (and
    said); the header's held-out record wins over a sidecar's in any case."""
    from mfclip_cli.model import read_checkpoint_info

    training = {"data": {"name": "faces", "index_sha256": "a" * 64}, "protocol": {"name": "p"}}
    path = tmp_path / "m.safetensors"
    save_checkpoint(build_model(tiny_config), path, metadata={"training": training})
    own = read_checkpoint_info(path)
    assert own.metadata["training"]["data"] == training["data"] and own.sidecar_ignored is None
    sidecar = json.loads(path.with_suffix(".json").read_text())
    stale = {**sidecar, "sha256": "1" * 64, "training": {"data": {"index_sha256": "0" * 64}}}
    path.with_suffix(".json").write_text(json.dumps(stale))
    info = read_checkpoint_info(path)
    assert info.metadata["training"]["data"] == training["data"]
    assert "describes other weights (SHA-256 111111111111" in info.sidecar_ignored
    edited = {**sidecar, "training": {**sidecar["training"], "data": {"index_sha256": "0" * 64}}}
    path.with_suffix(".json").write_text(json.dumps(edited))  # its own SHA-256, edited record
    assert read_checkpoint_info(path).metadata["training"]["data"] == training["data"]
    path.with_suffix(".json").write_text(json.dumps(stale))
    scanned = mfclip("scan", str(EXAMPLES / "astronaut.jpg"), "-w", str(path), "--jsonl", "-")
    assert scanned.returncode == 0, scanned.stderr
    assert "m.json beside it describes other weights" in " ".join(scanned.stderr.split())
    assert weights_info(str(path))["sidecar_ignored"] == info.sidecar_ignored
    register_weights(path, "copied", store=tmp_path / "store")  # the store keeps a true sidecar
    kept = json.loads((tmp_path / "store" / "copied.json").read_text())
    assert kept["sha256"] == info.sha256 and kept["training"]["data"] == training["data"]


def test_a_registration_that_fails_leaves_nothing_behind(tmp_path, tiny_config, monkeypatch):
    """Audit S F1: a full disk after the copy left an unregistered checkpoint in the store that
    refused every retry ("already exists") and that remove could not name."""
    from mfclip_cli.engines.weights import store as weights_store

    source = tmp_path / "best.safetensors"
    save_checkpoint(build_model(tiny_config), source)
    folder = tmp_path / "store"
    real = weights_store.write_json_atomic

    def registry_on_a_full_disk(path, document, **options):
        if Path(path).name == "registry.json":
            raise OSError(28, "No space left on device")
        return real(path, document, **options)

    monkeypatch.setattr(weights_store, "write_json_atomic", registry_on_a_full_disk)
    with pytest.raises(OSError, match="No space left"):
        register_weights(source, "lab", store=folder)
    assert sorted(p.name for p in folder.iterdir()) == []
    monkeypatch.setattr(weights_store, "write_json_atomic", real)
    leftover = folder / "lab.safetensors"  # as a failed add of an older version left it
    leftover.write_bytes(source.read_bytes())
    assert register_weights(source, "lab", store=folder)["name"] == "lab"  # taken over
    assert [e["name"] for e in read_registry(folder)] == ["lab"]


def test_a_registration_never_replaces_a_users_file_unasked(tmp_path, tiny_config):
    """``weights add --store DIR`` and ``weights pull`` replaced a NAME.safetensors no entry
    named and any NAME.json, the user's files, without --force (audit R F3)."""
    from mfclip_cli.engines.weights.store import pull_weights

    source = tmp_path / "best.safetensors"
    save_checkpoint(build_model(tiny_config), source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    folder = tmp_path / "run9"
    folder.mkdir()
    (folder / "other.safetensors").write_bytes(b"the user's own bytes")
    (folder / "other.json").write_text('{"my": "report"}')
    with pytest.raises(WeightsError, match=r"other.safetensors and other.json in .* not replaced"):
        register_weights(source, "other", store=folder)
    with pytest.raises(WeightsError, match=r"other.safetensors and other.json in .* not replaced"):
        pull_weights(str(source), "other", sha256=digest, store=folder)
    assert (folder / "other.safetensors").read_bytes() == b"the user's own bytes"
    assert (folder / "other.json").read_text() == '{"my": "report"}'
    assert sorted(p.name for p in folder.iterdir()) == ["other.json", "other.safetensors"]
    (folder / "other.safetensors").unlink()
    with pytest.raises(WeightsError, match=r"^other.json in .* not replaced"):
        register_weights(source, "other", store=folder)
    assert register_weights(source, "other", store=folder, force=True)["sha256"] == digest
    assert json.loads((folder / "other.json").read_text())["sha256"] == digest


def test_a_checkpoint_no_scan_could_load_is_not_registered(tmp_path, tiny_config):
    """Missing tensors and NaN weights were registered and listed "hash check ok" (audit R F7)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save

    from mfclip_cli.errors import CheckpointError

    source = tmp_path / "best.safetensors"
    save_checkpoint(build_model(tiny_config), source)
    metadata = safe_open(str(source), "pt").metadata()
    tensors = load_file(source)
    name = next(k for k in tensors if k.startswith("head."))
    # a scan reads no language tensor (audit U L2: registered once scans stopped reading them)
    text = next(k for k in tensors if k.startswith("language.") and k.endswith("weight"))
    edits = {
        "missing": {k: v for k, v in tensors.items() if k != name},
        "nan": {**tensors, name: torch.full_like(tensors[name], float("nan"))},
        "language-inf": {**tensors, text: torch.full_like(tensors[text], float("inf"))},
    }
    for label, edited in edits.items():
        broken = tmp_path / f"{label}.safetensors"
        broken.write_bytes(save(edited, metadata=metadata))
        with pytest.raises(CheckpointError, match="does not match its config|not finite"):
            register_weights(broken, label, store=tmp_path / "store")
    assert not (tmp_path / "store").exists() or read_registry(tmp_path / "store") == []


def test_force_keeps_the_default_and_remove_takes_a_link_not_its_target(tmp_path, tiny_config):
    """Audit R F13: replacing the default with --force took its default status away (scans fell
    back to the demo); F16: removing an entry whose store file is a link left the link and the
    sidecar (its target outside the store must stay)."""
    from mfclip_cli.engines.weights.store import remove_weights

    source = tmp_path / "best.safetensors"
    save_checkpoint(build_model(tiny_config), source)
    store = tmp_path / "store"
    register_weights(source, "mine", default=True, store=store)
    register_weights(source, "mine", force=True, store=store)
    assert [(e["name"], e["default"]) for e in read_registry(store)] == [("mine", True)]
    (store / "mine.safetensors").unlink()
    (store / "mine.safetensors").symlink_to(source)
    remove_weights("mine", store)
    assert sorted(p.name for p in store.iterdir()) == ["registry.json"]
    assert source.is_file()


def test_a_registered_name_and_a_folder_or_file_of_that_name(tmp_path, tiny_config, monkeypatch):
    """Audit S F4: a run folder named like its registered checkpoint hid it; F12: a damaged
    registry refused even a checkpoint named by its path; F5: a relative MFCLIP_HOME."""
    source = tmp_path / "run1" / "best.safetensors"
    save_checkpoint(build_model(tiny_config), source)
    folder = tmp_path / "store"
    register_weights(source, "run1", store=folder)
    monkeypatch.chdir(tmp_path)  # where the run folder run1/ is
    assert resolve_weights("run1", folder).path == folder / "run1.safetensors"
    (tmp_path / "run2").write_text("hi")
    register_weights(source, "run2", store=folder)
    with pytest.raises(WeightsError, match=r"both a registered checkpoint and a file here: write "):
        resolve_weights("run2", folder)
    with pytest.raises(WeightsError, match=r"nor a name in .*store or the bundled store"):
        resolve_weights("run3", folder)
    (folder / "registry.json").write_text("{")
    assert resolve_weights(str(source), folder).path == source  # a path needs no registry
    monkeypatch.setenv("MFCLIP_HOME", "relative-home")
    with pytest.raises(UsageError, match="MFCLIP_HOME is a relative path"):
        user_store()


def test_removing_imported_clip_weights_deletes_their_file(tmp_path):
    """Audit S F6: remove said "removed" and left clip/NAME.safetensors, which refused a
    re-import. F7: import-clip writes the registry under the store's lock."""
    import open_clip
    from safetensors.torch import save_file

    from mfclip_cli.engines.weights.store import import_clip
    from mfclip_cli.model.backbone import register_open_clip_configs

    register_open_clip_configs()
    clip = open_clip.create_model("mfclip-tiny", force_custom_text=True)
    weights = tmp_path / "tiny-clip.safetensors"
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, weights)
    store = tmp_path / "store"
    import_clip(weights, "c1", "mfclip-tiny", store=store)
    assert (store / "clip" / "c1.safetensors").is_file()
    remove_weights("c1", store)
    assert not (store / "clip" / "c1.safetensors").exists() and read_registry(store) == []
    assert import_clip(weights, "c1", "mfclip-tiny", store=store)["name"] == "c1"


def _demo_with_config(tmp_path, change, tensors=None):
    """The bundled demo checkpoint with its header's config changed by ``change`` (and its
    tensors by ``tensors``), as a file."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    demo = BUNDLED_STORE / next(e for e in read_registry(BUNDLED_STORE) if e.get("demo"))["file"]
    with safe_open(str(demo), "pt") as handle:
        header = dict(handle.metadata())
    config = json.loads(header["config"])
    change(config)
    header["config"] = json.dumps(config)
    state = load_file(str(demo))
    if tensors:
        tensors(state)
    changed = tmp_path / "changed.safetensors"
    save_file(state, str(changed), metadata=header)
    return changed


def test_a_config_asking_for_an_impossible_model_is_one_readable_error(tmp_path):
    """Audit S F8: a header whose config asks for a layer of 10**13 units ended in a traceback
    from the allocator."""
    from mfclip_cli.errors import CheckpointError
    from mfclip_cli.model import load_checkpoint

    def huge_head(config):
        config["head"]["hidden"] = 10**13

    huge = _demo_with_config(tmp_path, huge_head)
    with pytest.raises(CheckpointError, match=r"does not match its config .* wrong shape \['head"):
        load_checkpoint(huge)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads Linux /proc")
def test_a_config_describing_a_far_larger_model_is_refused_before_it_is_built(tmp_path):
    """Audit R F6: the demo's 14 MB of tensors under a header naming ViT-H-14 made the scan build
    that model (3.2 GB, 6 s) before comparing shapes. The model is first built on torch's meta
    device: the refusal costs what the file does."""

    def bigger(config):
        config["clip"]["architecture"] = "ViT-H-14"

    changed = _demo_with_config(tmp_path, bigger)
    script = f"""
from pathlib import Path
from mfclip_cli.errors import CheckpointError
from mfclip_cli.model import load_checkpoint
try:
    load_checkpoint({str(changed)!r}, inference=True)
except CheckpointError as error:
    print("refused:", error)
# this process's peak (getrusage's would count the pytest process it was forked from)
status = Path("/proc/self/status").read_text().splitlines()
print(next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) // 1024)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and "does not match its config" in lines[0], result.stderr
    # ViT-H-14's image tower alone is 2.5 GB of float32; the process, torch included, ~0.5 GB
    assert int(lines[-1]) < 1500, lines[-1]


def test_a_lora_pair_that_does_not_fit_its_weight_is_refused_before_its_product(tmp_path):
    """A hostile adapter pair (B of n x r, A of r x n for a large n) would make B A far larger
    than the file; it is refused by its shapes."""
    from mfclip_cli.errors import CheckpointError
    from mfclip_cli.model import load_checkpoint

    def widen(state):
        name = next(k for k in state if k.endswith(".lora_A.default.weight"))
        rank = state[name].shape[0]
        state[name] = torch.zeros(rank, 5000)
        state[name.replace("lora_A", "lora_B")] = torch.zeros(5000, rank)

    changed = _demo_with_config(tmp_path, lambda config: None, widen)
    with pytest.raises(CheckpointError, match="does not fit the weight it adapts"):
        load_checkpoint(changed, inference=True)


def test_a_folder_given_as_a_weights_file_is_said_to_be_one(tmp_path):
    """Audit S F9: `weights add FOLDER` said "weights file not found" of a folder that exists."""
    added = mfclip("weights", "add", str(tmp_path), "--name", "x")
    assert added.returncode == 1 and f"{tmp_path} is a folder, not a weights file" in added.stderr
    assert "Traceback" not in added.stderr
