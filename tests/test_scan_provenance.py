"""Provenance in ``mfclip scan``'s reports, run as a subprocess: every file, every output, the
trust anchors, --no-provenance, and the --fail-on-declared-ai gate."""

from __future__ import annotations

import csv
from pathlib import Path

import cli
import provenance_media as media
import pytest
from media import astronaut
from report_schemas import check_scan_lines
from rich.console import Console

from mfclip_cli.engines.scan.records import FileRecord
from mfclip_cli.engines.scan.writers.table import TableSink
from mfclip_cli.provenance import inspect
from mfclip_cli.provenance.watermark import SDXL_BITS


def mfclip(*args, cwd=None):
    return cli.mfclip(*args, cwd=cwd, env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """Held-out-like files, one per kind of evidence, and the CA that signed the C2PA ones."""
    root = tmp_path_factory.mktemp("provenance-case")
    authority = media.Authority()
    face = astronaut()
    files = {
        "c2pa_ai.jpg": authority.sign(media.jpeg_bytes(face), "image/jpeg"),
        "webui.png": media.png_bytes(media.picture(1), {"parameters": media.A1111_PARAMETERS}),
        "watermarked.png": media.png_bytes(media.embed_dwtdct(face, SDXL_BITS)),
        "clean.png": media.png_bytes(face),
        "broken_xmp.png": media.png_bytes(face, {"XML:com.adobe.xmp": "<x:xmpmeta><broken"}),
        # signed as a capture, its XMP saying generated: both said in the CSV (audit O L2)
        "capture_ai_xmp.jpg": authority.sign(
            media.jpeg_bytes(
                face,
                xmp=media.xmp_packet(
                    f'Iptc4xmpExt:DigitalSourceType="{media.IPTC}trainedAlgorithmicMedia"'
                ).encode(),
            ),
            "image/jpeg",
            source_type="digitalCapture",
        ),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "tampered.png").write_bytes(
        media.retouched_png(authority.sign(media.png_bytes(media.picture(2)), "image/png"))
    )
    anchors = root.parent / "anchors.pem"
    anchors.write_bytes(authority.ca_pem)
    return root, anchors


def records(jsonl: str) -> dict[str, dict]:
    lines = check_scan_lines(jsonl.splitlines())
    return {Path(line["path"]).name: line for line in lines if line["type"] == "file"}


@pytest.fixture(scope="module")
def scanned(case, weights, tmp_path_factory):
    root, _ = case
    out = tmp_path_factory.mktemp("provenance-reports")
    result = mfclip(
        "scan", str(root), "--weights", str(weights), "--jsonl", str(out / "r.jsonl"),
        "--csv", str(out / "r.csv"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out


def test_each_file_reports_exactly_its_evidence(scanned):
    lines = (scanned / "r.jsonl").read_text().splitlines()
    meta = check_scan_lines(lines)[0]
    assert meta["provenance"]["c2pa_trust"] is None
    assert set(meta["provenance"]["checks"]) == {"c2pa", "metadata", "watermark"}
    found = {name: record["provenance"] for name, record in records("\n".join(lines)).items()}
    assert found["c2pa_ai.jpg"]["c2pa"]["state"] == "valid"
    assert found["c2pa_ai.jpg"]["c2pa"]["digital_source_types"] == ["trainedAlgorithmicMedia"]
    assert found["tampered.png"]["c2pa"]["state"] == "invalid"
    assert "assertion.dataHash.mismatch" in found["tampered.png"]["c2pa"]["failures"]
    assert found["webui.png"]["metadata"]["generation"]["tool"] == "AUTOMATIC1111"
    assert found["watermarked.png"]["watermark"]["matches"][0]["bits_matched"] == 48
    assert found["clean.png"]["signals"] == [] and not found["clean.png"]["declares_ai"]
    assert found["broken_xmp.png"]["metadata"]["status"] == "error"
    declared = {name for name, evidence in found.items() if evidence["declares_ai"]}
    assert declared == {
        "c2pa_ai.jpg", "tampered.png", "webui.png", "watermarked.png", "capture_ai_xmp.jpg"
    }  # fmt: skip
    astronaut_faces = records("\n".join(lines))["clean.png"]["faces"]
    watermarked_faces = records("\n".join(lines))["watermarked.png"]["faces"]
    assert len(astronaut_faces) == len(watermarked_faces) == 1


def test_csv_columns_carry_the_gist(scanned):
    rows = {Path(row["path"]).name: row for row in csv.DictReader(open(scanned / "r.csv"))}
    row = rows["c2pa_ai.jpg"]
    assert (row["c2pa"], row["c2pa_signer"], row["declares_ai"]) == (
        "valid",
        "Test Generator Signer",
        "true",
    )
    assert row["declared_source_type"] == "c2pa:trainedAlgorithmicMedia"
    both = rows["capture_ai_xmp.jpg"]
    assert both["declared_source_type"] == "c2pa:digitalCapture xmp:trainedAlgorithmicMedia"
    assert both["declares_ai"] == "true"
    assert rows["webui.png"]["generator"] == "AUTOMATIC1111 sd_xl_base_1.0"
    assert rows["watermarked.png"]["watermark"] == "sdxl 48/48"
    assert (rows["clean.png"]["c2pa"], rows["clean.png"]["watermark"]) == ("none_found",) * 2
    # a check that failed is said, not left as an empty generator and "false"
    broken = rows["broken_xmp.png"]
    assert broken["provenance_errors"].startswith("metadata: ")
    assert broken["declares_ai"] == "false" and broken["generator"] == ""
    assert rows["clean.png"]["provenance_errors"] == ""


def test_html_report_from_the_jsonl_shows_a_provenance_panel(scanned):
    result = mfclip("report", str(scanned / "r.jsonl"), "--html", str(scanned / "r.html"))
    assert result.returncode == 0, result.stderr
    page = (scanned / "r.html").read_text()
    assert page.count('class="provenance"') == 7  # one panel a file
    assert "signed and intact, signer not trusted" in page
    assert "portrait photo of an astronaut, studio light" in page  # the prompt, whole
    assert "files whose own evidence declares an AI origin" in page


def test_trust_anchor_gate_and_switch(case, weights):
    root, anchors = case
    signed = str(root / "c2pa_ai.jpg")
    common = ("--weights", str(weights), "--fake-threshold", "1", "--jsonl", "-")
    trusted = mfclip("scan", signed, *common, "--c2pa-trust", str(anchors), "--fail-on-fake")
    assert trusted.returncode == 0, trusted.stderr  # the model's gate: no face labelled fake
    assert records(trusted.stdout)["c2pa_ai.jpg"]["provenance"]["c2pa"]["state"] == "trusted"
    gated = mfclip("scan", signed, *common, "--fail-on-declared-ai")
    assert gated.returncode == 4, gated.stderr
    clean = mfclip("scan", str(root / "clean.png"), *common, "--fail-on-declared-ai")
    assert clean.returncode == 0, clean.stderr
    off = mfclip("scan", signed, *common, "--no-provenance")
    assert (
        off.returncode == 0 and check_scan_lines(off.stdout.splitlines())[0]["provenance"] is None
    )
    assert "provenance" not in records(off.stdout)["c2pa_ai.jpg"]
    refused = mfclip("scan", signed, *common, "--c2pa-trust", str(root / "clean.png"))
    assert refused.returncode == 2 and "c2pa-trust" in refused.stderr


def test_table_notes_the_evidence_found_and_nothing_else():
    console = Console(width=160, record=True, force_terminal=False)
    sink = TableSink(console)
    sink.begin({"weights": {"name": "w", "sha256": "0" * 64}, "demo": False})
    webui = media.png_bytes(media.picture(1), {"parameters": media.A1111_PARAMETERS})
    clean = media.png_bytes(media.picture(2))
    for name, data in (("webui.png", webui), ("clean.png", clean)):
        sink.write(FileRecord(path=name, status="no_face", provenance=inspect(data, ".png")))
    sink.close({"complete": True})
    lines = console.export_text().splitlines()
    webui_line = next(line for line in lines if "webui.png" in line)
    assert "AUTOMATIC1111 generation parameters (model sd_xl_base_1.0) (unsigned)" in webui_line
    assert (
        next(line for line in lines if "clean.png" in line).rstrip(" │").endswith("no face found")
    )
