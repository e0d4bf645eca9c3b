"""scan --explain: a PNG per face of where the model looked, its path and the noise branch's square
in every report, and the same probabilities as a scan without it."""

import csv
import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from cli import mfclip
from media import astronaut, mosaic, save_video
from PIL import Image
from report_schemas import check_scan_lines
from test_scan_cli import run

from mfclip_cli.engines.scan.inputs import InputItem
from mfclip_cli.engines.scan.scanner import Scanner
from mfclip_cli.engines.scan.settings import ScanSettings
from mfclip_cli.model import build_model, load_model_config
from mfclip_cli.model.explain import explain

THREADS = 4


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("explain_inputs")
    Image.fromarray(astronaut()).save(folder / "astronaut.png")
    Image.fromarray(mosaic()).save(folder / "mosaic.png")
    save_video(folder / "clip.mp4", frames=3)
    return folder


def _files(report):
    return [
        line for line in check_scan_lines(report.read_text().splitlines()) if line["type"] == "file"
    ]


def test_every_face_gets_its_explanation(photos, weights, tmp_path):
    config = load_model_config("tiny")
    crop, patch = config.preprocess.crop_size, config.noise.patch_size
    plain, explained, table = tmp_path / "plain.jsonl", tmp_path / "x.jsonl", tmp_path / "x.csv"
    common = [str(photos), "--weights", str(weights), "--frames", "3"]
    assert run(*common, "--jsonl", str(plain)).returncode == 0
    outputs = [
        "--jsonl",
        str(explained),
        "--csv",
        str(table),
        "--html",
        str(tmp_path / "case.html"),
    ]
    result = run(*common, *outputs, "--explain", str(tmp_path / "why"))
    assert result.returncode == 0, result.stderr

    faces = [face for record in _files(explained) for face in record["faces"]]
    assert len(faces) >= 6  # the astronaut, the mosaic's four, the video's frames
    pngs = set()
    for face in faces:
        sheet = np.asarray(Image.open(face["explanation"]).convert("RGB"))
        assert sheet.shape == (crop, 2 * crop + 4, 3)  # the crop beside its heatmap
        x1, y1, x2, y2 = face["richest_patch"]
        assert x2 - x1 == y2 - y1 == patch and 0 <= x1 < x2 <= crop and 0 <= y1 < y2 <= crop
        pngs.add(face["explanation"])
    assert len(pngs) == len(faces)  # no face's PNG overwrote another's
    # the heatmap changes nothing the scan reports
    for before, after in zip(_files(plain), _files(explained)):
        assert before["path"] == after["path"] and len(before["faces"]) == len(after["faces"])
        for a, b in zip(before["faces"], after["faces"]):
            assert max(abs(a["probs"][k] - b["probs"][k]) for k in a["probs"]) < 1e-5
            assert a["label"] == b["label"] and "explanation" not in a
    page = (tmp_path / "case.html").read_text()
    assert page.count('alt="explanation of face') == len(faces)
    assert "explanation not shown" not in page
    assert page.count("· uncertainty ") == page.count("· noise patch [") == len(faces)
    rows = [row for row in csv.DictReader(table.open()) if row["face_index"]]
    assert [row["explanation"] for row in rows] == [face["explanation"] for face in faces]
    assert [row["richest_patch"] for row in rows] == [
        " ".join(map(str, face["richest_patch"])) for face in faces
    ]


def test_a_heatmap_or_copy_a_later_run_wrote_over_is_not_shown_as_this_scans(
    photos, weights, tmp_path
):
    """Audit X M1: the PNGs' names depend on the input alone; a later run into the folder
    (--force, other weights) replaced them, and ``mfclip report`` of the first run showed the
    second's heatmap beside the first's numbers, exit 0. Each record now holds the SHA-256 of
    what it wrote, and the report shows no heatmap whose bytes differ."""
    report = tmp_path / "r.jsonl"
    result = run(
        str(photos / "astronaut.png"), "--weights", str(weights), "--jsonl", str(report),
        "--explain", str(tmp_path / "why"), "--annotate", str(tmp_path / "copies"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (record,) = _files(report)
    (face,) = record["faces"]
    heatmap, copy = Path(face["explanation"]), Path(record["annotation"]["path"])
    for path, recorded in (
        (heatmap, face["explanation_sha256"]),
        (copy, record["annotation"]["sha256"]),
    ):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == recorded
    shown = mfclip("report", str(report), "--html", str(tmp_path / "shown.html"))
    assert (
        shown.returncode == 0
        and "explanation not shown" not in (tmp_path / "shown.html").read_text()
    )
    Image.fromarray(mosaic()).save(heatmap)  # another run's picture under the same name
    again = mfclip("report", str(report), "--html", str(tmp_path / "again.html"))
    assert again.returncode == 3, again.stderr
    page = " ".join((tmp_path / "again.html").read_text().split())
    assert "explanation not shown: the file has changed since the scan" in page
    assert 'alt="explanation of face' not in page


def test_an_explain_folder_is_checked_before_the_scan(photos, weights, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("the analyst's")
    report = tmp_path / "r.jsonl"
    args = [str(photos / "astronaut.png"), "--weights", str(weights), "--jsonl", str(report)]
    refused = run(*args, "--explain", str(taken))
    assert refused.returncode == 2 and "not empty" in refused.stderr
    assert not report.exists() and [p.name for p in taken.iterdir()] == ["notes.txt"]
    inside = run(str(photos), "--weights", str(weights), "--explain", str(photos / "why"))
    assert inside.returncode == 2 and "inside the input folder" in inside.stderr
    assert not (photos / "why").exists()


def test_pictures_are_never_written_beside_or_under_the_evidence(photos, weights, tmp_path):
    """Audit X M3: only folders named were checked; a quoted pattern, the shell's ``case/*`` or
    a list on stdin put the copies into the evidence folder, where the next scan of it takes
    them for evidence."""
    case = tmp_path / "case"
    case.mkdir()
    (case / "astronaut.png").write_bytes((photos / "astronaut.png").read_bytes())
    options = ["--weights", str(weights), "--jsonl", str(tmp_path / "r.jsonl"), "--force"]
    cases = [
        ([f"{case}/**"], "--annotate", case / "ann", "inside the folder the pattern"),
        ([str(case / "astronaut.png")], "--annotate", case, "is the folder of the input"),
        (["-"], "--explain", case, "is the folder of the input"),
    ]
    for inputs, option, folder, refusal in cases:
        result = run(*inputs, *options, option, str(folder), stdin=f"{case / 'astronaut.png'}\n")
        assert result.returncode == 2 and refusal in result.stderr, (inputs, result.stderr)
        assert sorted(p.name for p in case.iterdir()) == ["astronaut.png"]
    # a folder of its own beside a photo named alone stays the user's choice
    beside = run(str(case / "astronaut.png"), *options, "--annotate", str(tmp_path / "out"))
    assert beside.returncode == 0, beside.stderr
    assert "note: --annotate" not in beside.stderr
    # under the photo's folder too, with a word: a later scan of the folder takes its pictures
    under = run(str(case / "astronaut.png"), *options, "--annotate", str(case / "marks"))
    assert under.returncode == 0, under.stderr
    assert (
        f"note: --annotate {case / 'marks'} lies in {case}, the folder of the input "
        f"{case / 'astronaut.png'}: a later scan of {case} would take its pictures for evidence"
    ) in under.stderr


def test_a_png_that_cannot_be_written_is_that_files_problem(photos, weights, tmp_path):
    probe = run(str(photos / "astronaut.png"), "--weights", str(weights), "--jsonl", "-")
    sha = check_scan_lines(probe.stdout.splitlines())[1]["sha256"]
    folder = tmp_path / "why"
    (folder / f"astronaut.{sha[:8]}.face0.png").mkdir(parents=True)  # a folder in its place
    report = tmp_path / "r.jsonl"
    args = [str(photos / "astronaut.png"), str(photos / "mosaic.png"), "--weights", str(weights)]
    page = tmp_path / "r.html"
    result = run(
        *args, "--jsonl", str(report), "--explain", str(folder), "--force", "--html", str(page)
    )
    assert result.returncode == 3, result.stderr
    astronaut_record, mosaic_record = _files(report)
    assert "explanation not written" in astronaut_record["explanation_error"]
    # the report counts and shows it, as it does a failed annotated copy (audit X M2: "errors 0")
    again = tmp_path / "again.html"
    assert mfclip("report", str(report), "--html", str(again)).returncode == 0
    for html in (page.read_text(), again.read_text()):
        assert "<tr><th>errors</th><td>1</td></tr>" in html
        assert html.count("explanation not written") == 2  # in the file's section and the list
    assert "explanation" not in astronaut_record["faces"][0]
    assert "explanation_error" not in mosaic_record
    assert all(Image.open(face["explanation"]).size for face in mosaic_record["faces"])


def test_threads_sharing_a_model_explain_their_own_faces(tiny_config):
    """On CPU the scan's workers run one model at once; each heatmap must be that face's own (the
    capture hook keeps only its own thread's tokens), the one a call on its own computes."""
    torch.manual_seed(0)
    model = build_model(tiny_config).eval().merge_adapters()
    size = tiny_config.preprocess.crop_size
    generator = torch.Generator().manual_seed(4)
    batches = [torch.rand(8, 3, size, size, generator=generator) for _ in range(THREADS)]
    expected = [explain(model, batch).heatmaps for batch in batches]
    start = threading.Barrier(THREADS)

    def together(batch):
        start.wait()  # every thread inside the model at the same time
        return [explain(model, batch).heatmaps for _ in range(3)]

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(together, batches))
    for reference, repeats in zip(expected, results):
        for heatmaps in repeats:
            torch.testing.assert_close(heatmaps, reference, atol=1e-5, rtol=1e-4)


def test_scan_workers_keep_each_faces_evidence(tmp_path, tiny_config):
    """Evidence travels with its face through the workers: a threaded scan gives the crops,
    squares and heatmaps of a scan with one worker."""
    torch.manual_seed(0)
    model = build_model(tiny_config).eval()
    images = [astronaut(), mosaic(), np.ascontiguousarray(astronaut()[::-1, ::-1])]
    items = []
    for i, pixels in enumerate(images):
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
        items.append(InputItem(tmp_path / f"{i}.png"))
    alone = Scanner(model, ScanSettings(device="cpu", workers=1, explain=True), torch.device("cpu"))
    expected = [face for record in alone.scan(items) for face in record.faces]
    assert len(expected) >= 5
    threaded = Scanner(model, ScanSettings(device="cpu", workers=3, explain=True), alone.device)
    faces = [face for record in threaded.scan(items) for face in record.faces]
    assert len(faces) == len(expected)
    for face, reference in zip(faces, expected):
        assert face.richest_patch == reference.richest_patch
        np.testing.assert_array_equal(face.evidence.crop, reference.evidence.crop)
        np.testing.assert_allclose(face.evidence.heatmap, reference.evidence.heatmap, atol=1e-5)
