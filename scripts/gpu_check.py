"""What scripts/gpu-check.sh needs besides bash: the carried wheels checked, the install's
requirements, the size of what the device tool carries, and the closing summary.

Standard library only (it runs before anything is installed, on any Python >= 3.11):

    gpu_check.py wheels WHEEL_DIR           the carried wheels against scripts/gpu-wheels.txt
    gpu_check.py requirements               what to pip-install on the device, one per line
    gpu_check.py payload WHEEL_DIR          MiB the device tool would carry (limit 64)
    gpu_check.py summary OUT_DIR STEPS      the DESIGN §7 targets beside the measured values;
                                            writes OUT_DIR/gpu-check.json
"""

from __future__ import annotations

import datetime as dt
import json
import re
import statistics
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ElementTree
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEEL_LIST = ROOT / "scripts" / "gpu-wheels.txt"
PAYLOAD_LIMIT_MIB = 64  # the device tool's limit on the working tree it carries, wheels included
# the device image's own CUDA builds stay: a CPU wheel from here would replace them
KEPT_FROM_IMAGE = {"torch", "torchvision"}
BUILD_ONLY = {"setuptools"}  # in the isolated build of `pip install -e .`, not at run time
BENCH_CONFIGS = ("vit-b-16", "tiny")

# DESIGN §7, measured there on one H100, ViT-B-16 config, 1024 px JPEGs with one face each
TARGETS = (
    ("model stage", "vit-b-16", "model_faces_per_s", 8000.0, "faces/s"),
    ("end-to-end scan", "vit-b-16", "end_to_end_images_per_s", 800.0, "images/s"),
    ("training, LoRA, bf16", "vit-b-16", "train_faces_per_s", 2000.0, "faces/s"),
)
# measured beside the targets, for reference (DESIGN: the naive pipeline does 17-35 images/s on
# an H100; on a 2-core CPU the scan must reach 0.8x detection alone)
FIGURES = (
    ("model stage", "model_faces_per_s", "faces/s"),
    ("model stage with heatmaps", "model_explain_faces_per_s", "faces/s"),
    ("detection alone", "detect_images_per_s", "images/s"),
    ("end-to-end scan", "end_to_end_images_per_s", "images/s"),
    ("end-to-end scan --explain", "end_to_end_explain_images_per_s", "images/s"),
    ("naive pipeline", "naive_images_per_s", "images/s"),
    ("training step", "train_faces_per_s", "faces/s"),
)


def normalise(name: str) -> str:
    """A distribution's name as wheel files and pip compare them (PEP 503, with underscores)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def carried() -> dict[str, str]:
    """The wheels to carry: normalised name -> exact version, from scripts/gpu-wheels.txt."""
    wanted = {}
    for line in WHEEL_LIST.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            wanted[normalise(name)] = version.strip()
    return wanted


def wheel_problems(folder: Path) -> list[str]:
    """Why the wheels in ``folder`` would not install what the device lacks; empty when they do.

    One wheel per listed distribution, at its version, and nothing else (two versions of one
    distribution stop the whole install); each a readable zip whose METADATA names it.
    """
    wanted = carried()
    if not folder.is_dir():
        return [f"{folder} is missing: run scripts/gpu-check.sh --fetch on a machine with pip"]
    problems, found = [], {}
    for wheel in sorted(folder.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        key = normalise(name)
        if key in found:
            problems.append(f"two wheels of {key}: {found[key]} and {wheel.name}")
        found[key] = wheel.name
        if wanted.get(key) != version:
            listed = f"version {wanted[key]}" if key in wanted else "not listed"
            problems.append(f"{wheel.name}: {listed} in {WHEEL_LIST.name}")
            continue
        try:
            with zipfile.ZipFile(wheel) as archive:
                metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
                text = archive.read(metadata).decode("utf-8")
        except (zipfile.BadZipFile, StopIteration, OSError) as error:
            problems.append(f"{wheel.name}: not a readable wheel ({error or 'no METADATA'})")
            continue
        fields = dict(re.findall(r"^(Name|Version): *(.+?)\s*$", text, flags=re.MULTILINE))
        if normalise(fields.get("Name", "")) != key or fields.get("Version") != version:
            problems.append(f"{wheel.name}: its METADATA says {fields}")
    for key, version in wanted.items():
        if key not in found:
            problems.append(f"no wheel of {key}=={version} (scripts/gpu-check.sh --fetch)")
    return problems


def requirements() -> list[str]:
    """What to pip-install on the device with --no-deps: the project's dependencies except the
    image's own torch and torchvision, then what the carried wheels need beyond them, at least at
    the carried version. pip keeps whatever the image has that satisfies a line, and takes the
    rest from the carried wheels."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = []
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0]
        if normalise(name) not in KEPT_FROM_IMAGE:
            lines.append(requirement)
    named = {normalise(re.split(r"[<>=!~ ;\[]", line, maxsplit=1)[0]) for line in lines}
    for key, version in carried().items():
        if key not in named and key not in BUILD_ONLY:
            lines.append(f"{key}>={version}")
    return lines


def payload_bytes(folder: Path) -> int:
    """Bytes the device tool carries: tracked and untracked-not-ignored files, and the wheels."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    files = {ROOT / name.decode() for name in listed if name}
    total = sum(path.stat().st_size for path in files if path.is_file())
    return total + sum(wheel.stat().st_size for wheel in folder.glob("*.whl"))


# -- the summary -----------------------------------------------------------------------------------
def _tests(out: Path) -> list[dict]:
    """Each test of the junit files under ``out``: outcome, seconds and recorded properties."""
    tests = []
    # in the order they run
    reports = sorted(
        out.glob("tests-*.xml"), key=lambda path: (path.name != "tests-core.xml", path)
    )
    for report in reports:
        try:
            root = ElementTree.parse(report).getroot()
        except ElementTree.ParseError as error:
            tests.append({"name": report.name, "outcome": f"unreadable report: {error}"})
            continue
        for case in root.iter("testcase"):
            outcome, reason = "passed", ""
            for tag in ("failure", "error", "skipped"):
                element = case.find(tag)
                if element is not None:
                    outcome = {"failure": "FAILED", "error": "ERROR"}.get(tag, "skipped")
                    reason = ((element.get("message") or "").splitlines() or [""])[0][:200]
                    break
            properties = {
                item.get("name"): _number(item.get("value")) for item in case.iter("property")
            }
            tests.append(
                {
                    "name": case.get("name"),
                    "file": report.name,
                    "outcome": outcome,
                    "reason": reason,
                    "seconds": round(float(case.get("time") or 0), 1),
                    "measured": properties,
                }
            )
    return tests


def _number(value: str | None) -> float | str | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return value


def _bench(out: Path) -> dict[str, dict]:
    results = {}
    for config in BENCH_CONFIGS:
        path = out / f"bench-{config}.json"
        if path.is_file():
            try:
                results[config] = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as error:
                results[config] = {"error": f"unreadable: {error}"}
    return results


def paired(rounds: dict[str, list[float]], numerator: str, denominator: str) -> float | None:
    """The median over the bench's interleaved rounds of one stage's rate over another's in the
    same round, as the bench pairs its own ratios; None where either stage is missing."""
    if not rounds.get(numerator) or not rounds.get(denominator):
        return None
    return statistics.median(a / b for a, b in zip(rounds[numerator], rounds[denominator]))


def format_rate(value: float | None, unit: str = "") -> str:
    if value is None:
        return "not measured"
    return f"{value:,.1f} {unit}".strip() if value >= 10 else f"{value:.3g} {unit}".strip()


def summarise(out: Path, steps: list[dict]) -> dict:
    """Everything measured, and the targets beside it; also written to OUT/gpu-check.json."""
    bench = _bench(out)
    targets = []
    for stage, config, key, threshold, unit in TARGETS:
        measured = bench.get(config, {}).get(key)
        targets.append(
            {
                "target": f"{stage} >= {threshold:,.0f} {unit}",
                "config": config,
                "key": key,
                "threshold": threshold,
                "measured": measured,
                "met": None if measured is None else measured >= threshold,
            }
        )
    summary = {
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "steps": steps,
        "targets": targets,
        "bench": bench,
        "tests": _tests(out),
    }
    (out / "gpu-check.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def render(summary: dict) -> str:
    """The summary as the plain text the device tool brings back."""
    lines = ["", "== gpu-check summary =="]
    lines.append("steps:")
    for step in summary["steps"]:
        lines.append(f"  {step['name']:<16} {step['status']:<9} {step['seconds']:>5} s")
    lines.append("DESIGN §7 targets (set on one H100; ViT-B-16, 1024 px JPEGs, one face each):")
    for target in summary["targets"]:
        verdict = {True: "met", False: "MISSED", None: "-"}[target["met"]]
        measured = format_rate(target["measured"], target["target"].rsplit(" ", 1)[-1])
        lines.append(f"  {target['target']:<40} measured {measured:<22} {verdict}")
    for config, figures in summary["bench"].items():
        if "error" in figures:
            lines.append(f"bench {config}: {figures['error']}")
            continue
        lines.append(
            f"bench {config} on {figures.get('device_name')}, {figures.get('images')} JPEGs of "
            f"{figures.get('size')} px, batch {figures.get('batch_size')}:"
        )
        rounds = figures.get("rounds") or {}
        for name, key, unit in FIGURES:
            value = figures.get(key)
            compared = value and unit == "images/s" and key != "naive_images_per_s"
            ratio = paired(rounds, key, "naive_images_per_s") if compared else None
            shown = f"  ({ratio:.1f}x naive)" if ratio else ""
            lines.append(f"  {name:<34} {format_rate(value, unit)}{shown}")
        if ratio := paired(rounds, "end_to_end_images_per_s", "detect_images_per_s"):
            lines.append(f"  {'end-to-end / detection alone':<34} {ratio:.2f}")
        if figures.get("unsteady_stages"):
            lines.append(f"  unsteady (load moved): {', '.join(figures['unsteady_stages'])}")
    lines.append("CUDA tests:")
    if not summary["tests"]:
        lines.append("  none ran")
    for test in summary["tests"]:
        lines.append(f"  {test['outcome']:<7} {test['name']} ({test.get('seconds', 0)} s)")
        if test.get("reason"):
            lines.append(f"      {test['reason']}")
        for name, value in (test.get("measured") or {}).items():
            lines.append(
                f"      {name} = {value:.4g}"
                if isinstance(value, float)
                else f"      {name} = {value}"
            )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    command, *arguments = argv
    if command == "wheels":
        problems = wheel_problems(Path(arguments[0]))
        for problem in problems:
            print(f"  carried wheels: {problem}")
        if not problems:
            print(f"  carried wheels: all {len(carried())} present and readable")
        return 1 if problems else 0
    if command == "requirements":
        print("\n".join(requirements()))
        return 0
    if command == "payload":
        mib = payload_bytes(Path(arguments[0])) / 2**20
        verdict = "within" if mib < PAYLOAD_LIMIT_MIB else "OVER"
        print(f"  carried payload: {mib:.1f} MiB, {verdict} the device tool's {PAYLOAD_LIMIT_MIB}")
        return 0 if mib < PAYLOAD_LIMIT_MIB else 1
    if command == "summary":
        out, steps_file = Path(arguments[0]), Path(arguments[1])
        steps = [json.loads(line) for line in steps_file.read_text().splitlines() if line]
        print(render(summarise(out, steps)))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
