"""The HTML case report: `mfclip scan --html` and `mfclip report`, run as a user runs them."""

import base64
import io
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from cli import mfclip
from PIL import Image
from report_schemas import check_scan_outputs

from mfclip_cli.engines.scan.records import FileRecord
from mfclip_cli.engines.scan.writers.common import DEMO_NOTICE, ReportError, report_lines
from mfclip_cli.engines.scan.writers.html import (
    CROP_SIDE,
    FACELESS_THUMBNAIL_SIDE,
    THUMBNAIL_SIDE,
    HtmlSink,
    report_from_jsonl,
)
from mfclip_cli.engines.scan.writers.table import verdict_note

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MARKUP_NAME = '<script>alert("x")<.png'  # a file name that is markup
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
DATA_URI = re.compile(r"data:image/(?:jpeg|png);base64,[A-Za-z0-9+/=]*")


class Page(HTMLParser):
    """A report page parsed: its tags checked for balance, and per file section what it shows."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.problems: list[str] = []
        self.sources: list[str] = []
        self.links: list[str] = []
        self.sections: list[dict] = []
        self._capture: str | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "section":
            self.sections.append(
                {"id": attrs["id"], "title": [], "images": [], "labels": [], "bars": [], "text": []}
            )
        section = self.sections[-1] if self.sections else None
        if "src" in attrs:
            self.sources.append(attrs["src"])
            if section is not None:
                section["images"].append((attrs.get("class"), attrs.get("alt"), attrs["src"]))
        if "href" in attrs:
            self.links.append(attrs["href"])
        if "fill" in classes:
            section["bars"].append(re.search(r"width: ([\d.]+)%", attrs["style"]).group(1))
        if tag == "h2" and section is not None and not section["title"]:
            self._capture = "title"
        if "label" in classes:
            self._capture = "labels"
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if tag == "h2" or (tag == "span" and self._capture == "labels"):
            self._capture = None
        if not self.open or self.open[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.open[-1:] or 'nothing'}")
        else:
            self.open.pop()

    def handle_data(self, data):
        if self.sections:
            self.sections[-1]["text"].append(data)
            if self._capture:
                self.sections[-1][self._capture].append(data)

    def path(self, section: dict) -> str:
        return section["title"][1]  # after its number, before its status

    def section(self, name: str) -> dict:
        (found,) = [s for s in self.sections if Path(self.path(s)).name == name]
        return found


def decoded(src: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
    image.load()
    return image


def sections_of(html: str) -> list[str]:
    return re.findall(r"<section.*?</section>", html, re.S)


@pytest.fixture(scope="module")
def scan(weights, tmp_path_factory):
    """examples/ and two awkward files scanned into JSON, JSON Lines and HTML from the folder
    above them, with relative paths."""
    root = tmp_path_factory.mktemp("html")
    case = root / "case"
    case.mkdir()
    for name in ("astronaut.jpg", "astronaut_clip.mp4", "mosaic_four_faces.jpg", "no_face.jpg"):
        shutil.copy(EXAMPLES / name, case / name)
    shutil.copy(EXAMPLES / "astronaut_synthetic_gan.png", case / MARKUP_NAME)
    (case / "broken.png").write_text("not an image")
    result = mfclip(
        "scan",
        "case",
        "--weights",
        str(weights),
        "--jsonl",
        "scan.jsonl",
        "--json",
        "scan.json",
        "--html",
        "report.html",
        "-q",
        cwd=root,
    )
    assert result.returncode == 3, result.stderr  # broken.png
    check_scan_outputs(root / "scan.json", root / "scan.jsonl")
    files = json.loads((root / "scan.json").read_text(encoding="utf-8"))["files"]
    return root, files, (root / "report.html").read_text(encoding="utf-8")


def test_the_report_is_well_formed_self_contained_and_has_a_section_per_input(scan):
    root, files, html = scan
    page = Page(html)
    assert not page.problems and page.open == [], (page.problems, page.open)
    assert [page.path(s) for s in page.sections] == [f["path"] for f in files]  # JSON's order
    assert len(files) == 6
    assert page.sources and all(DATA_URI.fullmatch(src) for src in page.sources)
    section_ids = {s["id"] for s in page.sections}
    assert page.links and all(link[0] == "#" and link[1:] in section_ids for link in page.links)
    outside = DATA_URI.sub("", html).lower()
    for external in ("http", "//", "<link", "<script", "@import", "url(", "<iframe"):
        assert external not in outside, external
    assert 'class="warning"' not in html  # the test checkpoint is no demo, the scan finished
    broken = page.section("broken.png")
    assert "not a recognised image format" in "".join(broken["text"]) and not broken["images"]
    # the summary's list of errors; the other links, the files to look at first, each once
    assert page.links[0] == f"#{broken['id']}" and len(set(page.links)) == len(page.links)


def test_every_picture_decodes_and_every_face_is_shown_with_its_bars_and_label(scan):
    _, files, html = scan
    page = Page(html)
    for record, section in zip(files, page.sections):
        thumbnails = [decoded(src) for kind, _, src in section["images"] if kind == "thumb"]
        crops = [decoded(src) for kind, alt, src in section["images"] if alt.startswith("face ")]
        assert all(max(image.size) <= THUMBNAIL_SIDE for image in thumbnails)
        assert all(image.size == (CROP_SIDE, CROP_SIDE) for image in crops)
        assert len(crops) == len(record["faces"]), record["path"]
        if record["status"] == "error":
            assert thumbnails == []
        elif record.get("video"):
            frames = sorted({face["frame"] for face in record["faces"]})
            assert len(thumbnails) == record["video"]["frames_with_faces"] == len(frames) > 1
            assert all(f"frame {frame} " in "".join(section["text"]) for frame in frames)
        else:
            assert len(thumbnails) == 1
            # 512 px: kept where it has a face; a picture without one is at most 320 px
            side = THUMBNAIL_SIDE if record["faces"] else FACELESS_THUMBNAIL_SIDE
            scale = min(1.0, side / max(record["width"], record["height"]))
            expected = (round(record["width"] * scale), round(record["height"] * scale))
            assert thumbnails[0].size == expected, record["path"]
        assert section["labels"] == [face["label"] for face in record["faces"]]
        assert section["bars"] == [
            f"{100 * value:.1f}" for face in record["faces"] for value in face["probs"].values()
        ]


def test_a_file_name_that_is_markup_is_escaped(scan):
    _, _, html = scan
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;.png" in html
    assert Page(html).section(MARKUP_NAME)["labels"]  # its face is reported like any other


def test_mfclip_report_renders_the_same_sections_from_the_jsonl(scan, tmp_path):
    root, _, html = scan
    elsewhere = tmp_path / "elsewhere"  # relative paths are read from the scan's folder
    elsewhere.mkdir()
    result = mfclip("report", str(root / "scan.jsonl"), "--html", "again.html", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    again = (elsewhere / "again.html").read_text(encoding="utf-8")
    assert sections_of(again) == sections_of(html) and len(sections_of(html)) == 6
    assert "rendered from" in again and not Page(again).problems


def test_an_existing_report_is_replaced_only_with_force(scan, weights, tmp_path):
    root, _, html = scan
    refused = mfclip(
        "scan", "case/no_face.jpg", "--weights", str(weights), "--html", "report.html", cwd=root
    )
    assert refused.returncode == 2 and "already exists" in refused.stderr
    target = tmp_path / "r.html"
    target.write_text("an earlier report")
    refused = mfclip("report", str(root / "scan.jsonl"), "--html", str(target), cwd=tmp_path)
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert target.read_text() == "an earlier report"
    forced = mfclip(
        "report", str(root / "scan.jsonl"), "--html", str(target), "--force", cwd=tmp_path
    )
    assert forced.returncode == 0, forced.stderr
    assert sections_of(target.read_text(encoding="utf-8")) == sections_of(html)
    assert (root / "report.html").read_text(encoding="utf-8") == html
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]  # no staging file left


def test_report_writes_no_page_over_a_file_the_report_lists(scan, tmp_path):
    """Audit X M6: ``report --html case/IMG.jpg --force`` replaced the evidence with the page;
    ``scan`` refuses that whatever --force says, and so does ``report`` now, by file (a hard
    link to an input is one too)."""
    root, _, _ = scan
    shutil.copytree(root / "case", tmp_path / "case")
    lines = _report_lines(root)
    lines[0]["cwd"] = str(tmp_path)
    source = _write_lines(tmp_path / "moved.jsonl", lines)
    evidence = tmp_path / "case" / "no_face.jpg"
    os.link(evidence, tmp_path / "linked.jpg")
    before = evidence.read_bytes()
    for target in (evidence, tmp_path / "linked.jpg"):
        result = mfclip("report", str(source), "--html", str(target), "--force", cwd=tmp_path)
        assert result.returncode == 2 and "never written over evidence" in result.stderr
        assert evidence.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def _report_lines(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "scan.jsonl").read_text("utf-8").splitlines()]


def _write_lines(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def test_missing_and_changed_inputs_are_shown_as_such_not_fatal(scan, tmp_path):
    root, _, _ = scan
    shutil.copytree(root / "case", tmp_path / "case")
    (tmp_path / "case" / "mosaic_four_faces.jpg").unlink()
    with (tmp_path / "case" / "no_face.jpg").open("ab") as handle:
        handle.write(b"edited")
    lines = _report_lines(root)
    lines[0]["cwd"] = str(tmp_path)
    source = _write_lines(tmp_path / "moved.jsonl", lines)
    result = mfclip("report", str(source), "--html", "r.html", cwd=tmp_path)
    assert result.returncode == 3 and "2 input(s) could not be read again" in result.stderr
    page = Page((tmp_path / "r.html").read_text(encoding="utf-8"))
    mosaic = page.section("mosaic_four_faces.jpg")
    assert "input missing" in "".join(mosaic["text"]) and not mosaic["images"]
    assert len(mosaic["labels"]) == 4 and len(mosaic["bars"]) == 12  # the results stay
    changed = page.section("no_face.jpg")
    assert "changed since the scan" in "".join(changed["text"]) and not changed["images"]
    assert page.section("astronaut.jpg")["images"]


def test_a_report_cut_off_by_a_crash_renders_as_partial(scan, tmp_path):
    root, files, _ = scan
    text = (root / "scan.jsonl").read_text(encoding="utf-8")
    last_file = text.rindex('{"type": "file"')
    source = tmp_path / "cut.jsonl"
    source.write_text(text[: last_file + 40], encoding="utf-8")  # no end line, half a record
    assert report_from_jsonl(source, tmp_path / "r.html") == 0
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert len(sections_of(html)) == len(files) - 1 and "Partial report" in html


def test_a_record_a_resumed_run_replaced_is_not_shown(scan, tmp_path):
    """A resumed run scans again a file changed since (or one that could not be read) and
    appends its new record: the report showed both, the stale verdict beside the new, and
    counted the file twice (audit F2)."""
    root, files, _ = scan
    lines = _report_lines(root)
    first = next(line for line in lines if line["type"] == "file" and line["faces"])
    again = json.loads(json.dumps(first))
    again["sha256"] = "0" * 64  # the file as it is now
    again["faces"] = again["faces"][:1]
    source = _write_lines(tmp_path / "resumed.jsonl", [*lines, again, lines[-1]])
    report_from_jsonl(source, tmp_path / "r.html")
    page = Page((tmp_path / "r.html").read_text(encoding="utf-8"))
    assert [page.path(s) for s in page.sections].count(first["path"]) == 1
    assert len(page.sections) == len(files)
    assert len(page.section(Path(first["path"]).name)["labels"]) == 1  # the later record's
    # resumed with the folder named by its absolute path: the same input, as resume takes it
    again["path"] = str(Path(lines[0]["cwd"]) / first["path"])
    source = _write_lines(tmp_path / "absolute.jsonl", [*lines, again, lines[-1]])
    report_from_jsonl(source, tmp_path / "a.html")
    page = Page((tmp_path / "a.html").read_text(encoding="utf-8"))
    assert len(page.sections) == len(files)
    assert first["path"] not in [page.path(s) for s in page.sections]


def test_the_meta_block_warns_of_demo_weights_and_shows_the_calibration(scan, tmp_path):
    root, _, _ = scan
    lines = _report_lines(root)
    lines[0].update(demo=True, calibration={"method": "temperature", "temperature": 1.7})
    report_from_jsonl(_write_lines(tmp_path / "demo.jsonl", lines), tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert f'<p class="warning">{DEMO_NOTICE}.</p>' in html
    assert "<th>calibration</th><td>method temperature; temperature 1.7</td>" in html
    assert lines[0]["weights"]["sha256"] in html and "<th>device</th><td>cpu</td>" in html
    assert f"<th>precision</th><td>{lines[0]['precision']['used']} (" in html


def test_a_fake_whose_family_is_unsure_says_so_in_the_report_and_the_table(scan, tmp_path):
    """A face sure to be fake but split between the families keeps its label (2.10.0); the
    report and the table say its family is unsure, beside an inconclusive face's reasons too."""
    root, _, _ = scan
    lines = _report_lines(root)
    faces = [face for line in lines if line["type"] == "file" for face in line["faces"]]
    sure, leaning = faces[0], faces[1]
    sure.update(probs={"real": 0.02, "diffusion": 0.49, "gan": 0.49}, label="gan")
    sure.update(family_uncertainty=0.999711, family_uncertain=True)
    leaning.update(label="inconclusive", leaning="diffusion", inconclusive=["ood"])
    leaning.update(family_uncertainty=0.64, family_uncertain=True)
    report_from_jsonl(_write_lines(tmp_path / "family.jsonl", lines), tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert html.count("family unsure (family uncertainty 1.00)") == 1
    assert 'ood</span>\n<span class="small">· family unsure (family uncertainty 0.64)' in html
    record = FileRecord.from_dict({"path": "a.png", "faces": [sure, leaning]})
    assert [verdict_note(face) for face in record.faces] == [
        "gan (family unsure)",
        "inconclusive (leaning diffusion: ood; family unsure)",
    ]


def test_the_files_to_look_at_first_are_linked_from_the_top_of_the_page(scan, tmp_path):
    """Among thousands of sections (20,000 files made a 348 MB page of them, audit AA M1), the
    files with a face labelled diffusion or gan, or declaring an AI origin, and those with an
    inconclusive face are listed at the top, each linked to its section."""
    root, _, _ = scan
    lines = _report_lines(root)
    records = {Path(line["path"]).name: line for line in lines if line["type"] == "file"}
    for line in records.values():
        for face in line["faces"]:
            face.update(label="real")
            for key in ("leaning", "inconclusive"):
                face.pop(key, None)
    mosaic = records["mosaic_four_faces.jpg"]["faces"]
    mosaic[0].update(label="gan")
    mosaic[1].update(label="gan")
    mosaic[2].update(label="inconclusive", leaning="diffusion", inconclusive=["uncertain"])
    records["astronaut.jpg"]["faces"][0].update(label="diffusion")
    report_from_jsonl(_write_lines(tmp_path / "flagged.jsonl", lines), tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    page = Page(html)
    number = {page.path(section): section["id"] for section in page.sections}
    assert "Files to look at first" in html
    assert "2 file(s) with a face labelled diffusion or gan, or declaring an AI origin" in html
    assert "1 file(s) with an inconclusive face" in html
    flagged = re.findall(r'<li><a href="#(file-\d+)">\d+\. ([^<]+)</a>: ([^<]+)</li>', html)
    assert [(link, Path(path).name, why) for link, path, why in flagged] == [
        (number["case/broken.png"], "broken.png", "not a recognised image format"),  # errors
        (number["case/astronaut.jpg"], "astronaut.jpg", "1 face(s) labelled diffusion"),
        (number["case/mosaic_four_faces.jpg"], "mosaic_four_faces.jpg", "2 face(s) labelled gan"),
    ]
    uncertain = re.findall(r'<ul class="uncertain">\s*<li><a href="#(file-\d+)">', html)
    assert uncertain == [number["case/mosaic_four_faces.jpg"]]


def test_mfclip_report_tells_its_progress_file_by_file(scan, tmp_path):
    """Re-rendering 20,000 files read every input again for a minute without a word (audit AA
    L2): each file rendered is told, out of the inputs the report lists."""
    root, files, _ = scan
    told: list[tuple[int, int]] = []
    report_from_jsonl(
        root / "scan.jsonl",
        tmp_path / "r.html",
        progress=lambda done, total: told.append((done, total)),
    )
    assert told == [(done, len(files)) for done in range(1, len(files) + 1)]


def test_the_meta_block_says_an_unsupported_operating_point_was_used(scan, tmp_path):
    """Accepted with --accept-unsupported-fpr, it was said only in the JSON's meta."""
    root, _, _ = scan
    lines = _report_lines(root)
    lines[0]["operating_point"] = {
        "target": "fpr:0.01",
        "n_real": 37,
        "resolution": 0.027,
        "false_positives": 0,
        "fpr_upper_95": 0.0778,
        "supported": False,
        "accepted_unsupported": True,
    }
    report_from_jsonl(_write_lines(tmp_path / "op.jsonl", lines), tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert (
        "<th>operating point</th><td>fpr:0.01, from 37 validation reals: its FPR is at most "
        "7.78% (95 % confidence); NOT SUPPORTED by them, used because --accept-unsupported-fpr "
        "was given</td>"
    ) in html


def test_an_explanation_is_shown_beside_its_face(scan, tmp_path):
    root, _, _ = scan
    lines = _report_lines(root)
    Image.new("RGB", (224, 224), (250, 0, 0)).save(tmp_path / "heat.png")
    records = {Path(line.get("path", "")).name: line for line in lines}
    records["astronaut.jpg"]["faces"][0]["explanation"] = str(tmp_path / "heat.png")
    records["mosaic_four_faces.jpg"]["faces"][1]["explanation"] = str(tmp_path / "gone.png")
    report_from_jsonl(_write_lines(tmp_path / "x.jsonl", lines), tmp_path / "r.html")
    page = Page((tmp_path / "r.html").read_text(encoding="utf-8"))
    (explanation,) = [
        src for _, alt, src in page.section("astronaut.jpg")["images"] if "explanation" in alt
    ]
    assert explanation.startswith("data:image/png;") and decoded(explanation).size == (160, 160)
    assert "explanation not shown" in "".join(page.section("mosaic_four_faces.jpg")["text"])


@pytest.mark.parametrize(
    "content",
    [b"", b"not json\n", b'{"type": "file", "path": "a.jpg"}\n', b"\xff\xfe\n", b"[1, 2]\n"],
)
def test_what_is_not_a_report_is_refused_and_nothing_written(content, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_bytes(content)
    with pytest.raises(ReportError, match="not an mfclip JSON Lines report"):
        report_from_jsonl(source, tmp_path / "out" / "r.html")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


@pytest.mark.parametrize(
    "change, refusal",
    [
        ({"schema_version": "3.0.0"}, "in report format 3.0.0; this mfclip renders"),
        ({"tool": "other-scanner"}, "written by 'other-scanner', not by mfclip"),
    ],
)
def test_another_tools_or_another_major_formats_report_is_refused(scan, tmp_path, change, refusal):
    lines = (scan[0] / "scan.jsonl").read_text().splitlines()
    meta = {**json.loads(lines[0]), **change}
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join([json.dumps(meta), *lines[1:]]) + "\n")
    with pytest.raises(ReportError, match=re.escape(refusal)):
        report_from_jsonl(source, tmp_path / "out" / "r.html")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_a_bad_line_after_the_meta_is_refused_from_the_command_line(scan, tmp_path):
    root, _, _ = scan
    text = (root / "scan.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    source = tmp_path / "in.jsonl"
    source.write_text("".join([text[0], "{broken\n", *text[1:]]), encoding="utf-8")
    result = mfclip("report", str(source), "--html", "r.html", cwd=tmp_path)
    assert result.returncode == 2 and "not an mfclip JSON Lines report" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    missing = mfclip("report", "nowhere.jsonl", "--html", "r.html", cwd=tmp_path)
    # a missing input is exit 1, as a missing dataset is (README's exit codes); it was 2
    assert missing.returncode == 1 and "cannot read nowhere.jsonl" in missing.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_a_discarded_report_leaves_nothing_and_an_earlier_report_intact(tmp_path):
    meta = {"type": "meta", "cwd": str(tmp_path), "weights": {}}
    sink = HtmlSink(tmp_path / "new.html")
    sink.begin(meta)
    sink.write(FileRecord(path="gone.jpg", status="error", error="cannot read file"))
    sink.discard()
    (tmp_path / "old.html").write_text("earlier")
    forced = HtmlSink(tmp_path / "old.html", force=True)
    forced.begin(meta)
    forced.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.html"]
    assert (tmp_path / "old.html").read_text() == "earlier"


def test_report_lines_split_at_newlines_only_and_drop_a_cut_off_line():
    """A file name may hold U+2028, which str.splitlines would split a JSON line at."""
    lines = '{"path": "a\u2028b.jpg"}\n\n{"path": "c.jpg"}\n{"path": "cut'.encode()
    assert list(report_lines(io.BytesIO(lines))) == [{"path": "a\u2028b.jpg"}, {"path": "c.jpg"}]
