"""``mfclip weights pull``: served from a local HTTP server on 127.0.0.1, cut mid-file, resumed,
refused."""

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from cli import mfclip

from mfclip_cli.engines.weights.store import read_registry
from mfclip_cli.model import build_model, load_model_config, save_checkpoint


class _Files(BaseHTTPRequestHandler):
    """GET /NAME with Range support; ``cut`` files send their headers, then only half their
    bytes."""

    files: dict[str, bytes] = {}
    cut: set[str] = set()
    ranges: list[str | None] = []

    def do_GET(self):  # noqa: N802 - the http.server interface
        name = self.path.lstrip("/")
        data = self.files.get(name)
        self.ranges.append(self.headers.get("Range"))
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = (
            int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        )
        if start >= len(data) > 0:
            self.send_error(416, "Range Not Satisfiable")
            return
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if name in self.cut:
            self.cut.discard(name)  # cut once: the next request gets the rest
            body = body[: len(body) // 2]
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("published") / "model.safetensors"
    save_checkpoint(build_model(load_model_config("tiny")), path)
    return path.read_bytes()


def pull(home: Path, *args):
    return mfclip("weights", "pull", *args, env={"MFCLIP_HOME": str(home)})


def _store_files(home: Path) -> list[str]:
    return (
        sorted(p.name for p in (home / "weights").iterdir()) if (home / "weights").exists() else []
    )


def test_interrupted_download_resumes_and_registers_after_the_hash_check(
    server, checkpoint, tmp_path
):
    _Files.files["model.safetensors"] = checkpoint
    _Files.cut.add("model.safetensors")
    _Files.ranges.clear()
    digest = hashlib.sha256(checkpoint).hexdigest()
    url = f"{server}/model.safetensors"
    first = pull(tmp_path, url, "--name", "published", "--sha256", digest)
    assert first.returncode == 1 and "run the same command again to resume" in first.stderr, (
        first.stderr
    )
    partial = tmp_path / "weights" / ".published.safetensors.part"
    assert 0 < partial.stat().st_size < len(checkpoint) and not read_registry(tmp_path / "weights")
    second = pull(tmp_path, url, "--name", "published", "--sha256", digest)
    assert second.returncode == 0, second.stderr
    assert _Files.ranges == [
        None,
        f"bytes={len(checkpoint) // 2}-",
    ]  # the second request continued the first
    (entry,) = read_registry(tmp_path / "weights")
    assert entry["name"] == "published" and entry["sha256"] == digest and entry["origin"] == url
    assert (tmp_path / "weights" / "published.safetensors").read_bytes() == checkpoint
    assert _store_files(tmp_path) == ["published.json", "published.safetensors", "registry.json"]


def test_refusals_leave_no_entry_and_no_file(server, checkpoint, tmp_path):
    _Files.files.update(
        {
            "model.safetensors": checkpoint,
            "cut.safetensors": checkpoint[:-1000],
            "pickled.safetensors": b"\x80\x04" + b"\x00" * 200,
        }
    )
    digest = hashlib.sha256(checkpoint).hexdigest()
    cases = [
        ((f"{server}/model.safetensors", "--sha256", "0" * 64), "not the expected"),
        ((f"{server}/missing.safetensors", "--sha256", digest), "HTTP 404"),
        ((f"{server}/cut.safetensors", "--trust"), "truncated"),
        ((f"{server}/pickled.safetensors", "--trust"), "pickled"),
        (
            (f"{server}/model.safetensors",),
            f"--sha256 {digest}",
        ),  # no hash given: the digest, not registered
        ((str(tmp_path / "nowhere.safetensors"), "--trust"), "no such file"),
        ((f"{server}/model.safetensors", "--sha256", "xyz"), "64 hexadecimal digits"),
        (
            (f"{server}/model.safetensors", "--name", "mfclip-demo-tiny", "--trust"),
            "names bundled weights",
        ),
    ]
    for args, message in cases:
        name = [] if "--name" in args else ["--name", "mine"]
        result = pull(tmp_path, *args, *name)
        assert result.returncode in (1, 2) and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr and ".part" not in result.stderr
        assert _store_files(tmp_path) == [], (args, _store_files(tmp_path))


def test_a_local_file_with_trust_is_registered_and_listed(checkpoint, tmp_path):
    source = tmp_path / "copy.safetensors"
    source.write_bytes(checkpoint)
    result = pull(tmp_path / "home", str(source), "--name", "local", "--trust")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["sha256"] == hashlib.sha256(checkpoint).hexdigest()
    assert source.read_bytes() == checkpoint  # the source is copied, not moved


def test_a_second_pull_of_the_same_name_at_once_is_refused_in_words(checkpoint, tmp_path):
    """Audit S F13: two pulls of one name shared a partial file; the one that finished renamed
    it away and the other said "weights file not found: .../.same.safetensors.part". The
    partial file is held for the whole pull: the second is refused, and leaves it alone."""
    import fcntl
    import os

    source = tmp_path / "copy.safetensors"
    source.write_bytes(checkpoint)
    store = tmp_path / "home" / "weights"
    store.mkdir(parents=True)
    partial = store / ".same.safetensors.part"
    partial.write_bytes(checkpoint[:100])  # a pull under way, 100 bytes in
    held = os.open(partial, os.O_RDWR)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        refused = pull(tmp_path / "home", str(source), "--name", "same", "--trust")
    finally:
        os.close(held)
    assert refused.returncode == 1, refused.stderr
    said = " ".join(refused.stderr.split())
    assert "another mfclip weights pull of 'same'" in said and "under way" in said, said
    assert partial.read_bytes() == checkpoint[:100]  # the other pull's bytes, untouched
    assert read_registry(store) == []
    done = pull(tmp_path / "home", str(source), "--name", "same", "--trust")  # once it is over
    assert done.returncode == 0, done.stderr
    assert ".same.safetensors.part" not in _store_files(tmp_path / "home")
    assert read_registry(store)[0]["name"] == "same"
