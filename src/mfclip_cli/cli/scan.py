"""`mfclip scan` and `mfclip report`: the analyst's commands."""

from __future__ import annotations

import io
import sys
from typing import Optional, TextIO

import typer
from rich.console import Console
from rich.markup import escape

from mfclip_cli.cli.errors import errors_reported
from mfclip_cli.cli.options import BatchSize, Device, Force, MinFace, Precision, Quiet
from mfclip_cli.errors import UsageError


def scan(
    paths: list[str] = typer.Argument(
        ..., help="Files, folders, glob patterns, or - to read paths from stdin.", metavar="PATH"
    ),
    weights: Optional[list[str]] = typer.Option(
        None,
        "--weights",
        "-w",
        help=(
            "Checkpoint: registry name or .safetensors path (default: $MFCLIP_WEIGHTS, then the "
            "checkpoint registered with weights add --default, then the bundled demo). Repeat it "
            "to score each face with every checkpoint side by side (its 'detectors'); the first "
            "is the primary, whose probabilities, label and --fail-on-fake the report keeps."
        ),
        metavar="NAME|PATH",
    ),
    json_path: Optional[str] = typer.Option(
        None,
        "--json",
        help="Write one JSON document {meta, files} to FILE (- for stdout, once the run ends).",
        metavar="FILE|-",
    ),
    jsonl_path: Optional[str] = typer.Option(
        None,
        "--jsonl",
        help="Stream JSON Lines to FILE (- for stdout): a meta line, then one line per file.",
        metavar="FILE|-",
    ),
    csv_path: Optional[str] = typer.Option(
        None, "--csv", help="Write one CSV row per face to FILE (- for stdout).", metavar="FILE|-"
    ),
    html_path: Optional[str] = typer.Option(
        None,
        "--html",
        help="Write a self-contained HTML case report (pictures, boxes, face crops) to FILE.",
        metavar="FILE",
    ),
    annotate: Optional[str] = typer.Option(
        None,
        "--annotate",
        help="Write copies of the images (and of the video frames with faces) with boxes and "
        "labels drawn into DIR.",
        metavar="DIR",
    ),
    explain: Optional[str] = typer.Option(
        None,
        "--explain",
        help="Write, per face, a PNG of where the model looked (heatmap of what drove the fake "
        "score, and the noise branch's patch) into DIR; the HTML report shows it.",
        metavar="DIR",
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="With --jsonl FILE: skip inputs already recorded there (same path and SHA-256).",
    ),
    force: Force = False,
    recursive: bool = typer.Option(
        True, "--recursive/--no-recursive", help="Descend into sub-folders."
    ),
    null: bool = typer.Option(
        False,
        "--null",
        "-0",
        help="The paths read from stdin (-) end with a NUL byte, not a newline "
        "(find -print0): names holding a newline arrive whole.",
    ),
    device: Device = "auto",
    precision: Precision = "auto",
    batch_size: BatchSize = 32,
    workers: int = typer.Option(
        0,
        "--threads",
        "--workers",
        min=0,
        help=(
            "Threads working ahead on the files (0: one per CPU core on CPU, all cores but one, "
            "up to 16, with a GPU)."
        ),
        metavar="N",
    ),
    min_face: MinFace = 20,
    det_threshold: float = typer.Option(
        0.7,
        "--det-threshold",
        min=0.0,
        max=1.0,
        help="MTCNN's final (O-Net) face-score threshold.",
        metavar="P",
    ),
    detect_max_side: int = typer.Option(
        0,
        "--detect-max-side",
        min=0,
        help=(
            "Detect on a copy no longer than this: faster on large photos, but faces under "
            "12 x longest side / N px are not searched (recorded per file as smallest_face). "
            "0 (default): full resolution."
        ),
        metavar="PX",
    ),
    max_megapixels: float = typer.Option(
        100.0,
        "--max-megapixels",
        min=1.0,
        help=(
            "Refuse images larger than this, from their header (a decompression-bomb guard). "
            "A 108 MP phone photo needs 110; memory grows with it (about 8 GB at 100 MP)."
        ),
        metavar="MP",
    ),
    fake_threshold: str = typer.Option(
        "0.5",
        "--fake-threshold",
        help=(
            "A face is labelled fake when 1 - p(real) reaches this: a number in [0, 1], or "
            "fpr:0.01 / fpr:0.001 for the checkpoint's threshold of that validation FPR "
            "(refused when its validation split had too few real faces to support it). Above "
            "0.5, with a calibrated checkpoint, a face between 0.5 and it is inconclusive."
        ),
        metavar="X|fpr:X",
    ),
    accept_unsupported_fpr: bool = typer.Option(
        False,
        "--accept-unsupported-fpr",
        help=(
            "Use an fpr:X threshold even where the checkpoint's validation split cannot support "
            "that rate; the report's meta records it under operating_point."
        ),
    ),
    fps: float = typer.Option(
        1.0, "--fps", help="Frames sampled per second of a video or animation.", metavar="FPS"
    ),
    frames: Optional[int] = typer.Option(
        None,
        "--frames",
        help="Sample this many frames per video or animation, evenly spread (overrides --fps).",
        metavar="N",
    ),
    quiet: Quiet = False,
    fail_on_fake: bool = typer.Option(
        False,
        "--fail-on-fake",
        help="Exit with 4 when any face is labelled diffusion or gan (an inconclusive face "
        "does not count, whatever it leaned to: see --fail-on-inconclusive).",
    ),
    fail_on_inconclusive: bool = typer.Option(
        False,
        "--fail-on-inconclusive",
        help="Exit with 5 when any face is inconclusive (4 wins when --fail-on-fake finds a "
        "fake too).",
    ),
    inconclusive: bool = typer.Option(
        True,
        "--inconclusive/--no-inconclusive",
        help="Label inconclusive (keeping the label it leaned to) a face out of distribution, "
        "above the checkpoint's calibrated uncertainty threshold, unstable under --stability, "
        "or called real by a --fake-threshold above 0.5 while it leans fake (docs/verdicts.md).",
    ),
    stability: bool = typer.Option(
        False,
        "--stability",
        help="Score each face again on its region re-saved as JPEG 75 and 50 and halved and "
        "restored; report the spread of p(fake) and whether the label flips (a flip makes it "
        "inconclusive). About 4x the model work per face (docs/verdicts.md).",
    ),
    duplicates: bool = typer.Option(
        False,
        "--duplicates",
        help="Hash each image (64-bit DCT pHash, recorded as phash) and list near-duplicate "
        "files in the report's end, flagging groups whose verdicts disagree.",
    ),
    fail_on_declared_ai: bool = typer.Option(
        False,
        "--fail-on-declared-ai",
        help="Exit with 4 when a file's own evidence (C2PA, metadata, watermark; any strength) "
        "declares an AI or algorithmic origin: IPTC algorithmicMedia (procedural, no trained "
        "model) counts too. With --fail-on-fake, either one gates.",
    ),
    no_provenance: bool = typer.Option(
        False,
        "--no-provenance",
        help="Skip the provenance checks (C2PA, generator metadata, invisible watermarks).",
    ),
    c2pa_trust: Optional[str] = typer.Option(
        None,
        "--c2pa-trust",
        help="PEM file of trust anchors: a C2PA signer chaining to one reads 'trusted' (none "
        "by default: a good signature reads 'valid', signer not trusted).",
        metavar="FILE.pem",
    ),
) -> None:
    """Find every face; say if it is real, diffusion or GAN.

    Per-face probabilities as a table, JSON, JSON Lines, CSV or an HTML case report, beside the
    evidence each file carries about its origin (C2PA, generator metadata, invisible watermarks;
    docs/provenance.md).

    Exit codes: 0 every input scanned; 1 fatal error; 2 usage error; 3 finished but some inputs
    could not be read; 4 with --fail-on-fake when any face is labelled diffusion or gan, or with
    --fail-on-declared-ai when any file declares an AI origin; 5 with --fail-on-inconclusive when
    any face is inconclusive (and neither gives 4); 130 interrupted (Ctrl-C, SIGTERM), the
    reports marked partial (the CSV has no such mark); 141 the reader of its stdout went away
    (| head -1).

    Examples:

    \b
      mfclip scan photos/ --json case.json
      find evidence -name '*.jpg' | mfclip scan - --jsonl - | jq .
      mfclip scan clip.mp4 --fps 2 --html case.html --fail-on-fake
    """
    from mfclip_cli.engines.runtime import long_lived_imports, sigterm_as_ctrl_c

    # from the start, Ctrl-C and SIGTERM end the run with "interrupted" (130), as in the scan
    with errors_reported() as error_console, sigterm_as_ctrl_c():
        with long_lived_imports():
            from mfclip_cli.engines.scan.request import ScanRequest, checked_request
            from mfclip_cli.engines.scan.settings import ScanSettings
            from mfclip_cli.faces import MTCNN_THRESHOLDS
            from mfclip_cli.provenance import ProvenanceOptions, TrustError
            from mfclip_cli.scoring.calibration import parse_fake_threshold
        try:
            fake_number, fake_fpr = parse_fake_threshold(fake_threshold)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="'--fake-threshold'") from None

        if fail_on_inconclusive and not inconclusive:  # a gate that could never fire (audit Q M3)
            raise typer.BadParameter(
                "--no-inconclusive marks no face inconclusive: --fail-on-inconclusive would "
                "pass everything",
                param_hint="'--fail-on-inconclusive'",
            )
        if no_provenance and (c2pa_trust or fail_on_declared_ai):
            raise typer.BadParameter(
                "--no-provenance skips the checks that --c2pa-trust and --fail-on-declared-ai need",
                param_hint="'--no-provenance'",
            )
        try:
            provenance = None if no_provenance else ProvenanceOptions.with_trust_file(c2pa_trust)
        except TrustError as error:
            raise typer.BadParameter(str(error), param_hint="'--c2pa-trust'") from None
        request = ScanRequest(
            inputs=paths,
            settings=ScanSettings(
                device=device,
                precision=precision,
                batch_size=batch_size,
                workers=workers,
                min_face=min_face,
                detection_thresholds=(*MTCNN_THRESHOLDS[:2], det_threshold),
                detect_max_side=detect_max_side,
                max_pixels=round(max_megapixels * 1e6),
                fake_threshold=0.5 if fake_number is None else fake_number,
                fake_threshold_fpr=fake_fpr,
                accept_unsupported_fpr=accept_unsupported_fpr,
                fps=fps,
                frames=frames,
                provenance=provenance,
                inconclusive=inconclusive,
                stability=stability,
                duplicates=duplicates,
            ),
            weights=tuple(weights or ()),
            recursive=recursive,
            null_separated=null,
            json_path=json_path,
            jsonl_path=jsonl_path,
            csv_path=csv_path,
            html_path=html_path,
            annotate_dir=annotate,
            explain_dir=explain,
            resume=resume,
            force=force,
            quiet=quiet,
            fail_on_fake=fail_on_fake,
            fail_on_declared_ai=fail_on_declared_ai,
            fail_on_inconclusive=fail_on_inconclusive,
        )
        request = checked_request(request)  # before torch loads: a mistyped option in a moment
        with long_lived_imports():
            from mfclip_cli.engines.scan.run import run_scan
        code = run_scan(
            request,
            stdin=_stdin_as_paths() if "-" in paths else None,
            console=Console(),
            error_console=error_console,
        )
    raise typer.Exit(code)


def report(
    jsonl_path: str = typer.Argument(
        ..., help="A JSON Lines report of mfclip scan (--jsonl).", metavar="REPORT.jsonl"
    ),
    html_path: str = typer.Option(
        ..., "--html", help="Write the HTML case report to FILE.", metavar="FILE"
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing FILE."),
) -> None:
    """Render the HTML case report of an earlier scan's JSON Lines.

    The inputs are read again for their pictures (relative paths from the folder the scan ran
    in). Exit codes: 0 written; 1 REPORT.jsonl cannot be read; 2 not a report, or FILE exists
    without --force; 3 written, but some inputs were missing or changed (their sections say so).

    Examples:

    \b
      mfclip report case.jsonl --html case.html
    """
    from mfclip_cli.engines.runtime import EXIT_OK, EXIT_UNREADABLE, counting_bar
    from mfclip_cli.engines.scan.writers.html import report_from_jsonl

    with errors_reported() as error_console:
        bar = counting_bar("rendering", error_console, show=error_console.is_terminal)
        with bar:
            task = bar.add_task("rendering", total=None)
            unreadable = report_from_jsonl(
                jsonl_path,
                html_path,
                force=force,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    if unreadable:
        error_console.print(
            f"[bold yellow]warning:[/] {unreadable} input(s) could not be read again, or "
            f"their heatmaps: their pictures are missing from {escape(html_path)}",
            highlight=False,
        )
    raise typer.Exit(EXIT_UNREADABLE if unreadable else EXIT_OK)


def _stdin_as_paths() -> TextIO:
    """stdin read the way the file system decodes names: bytes that are not UTF-8 are kept (as
    surrogates), so that such a name, piped from ``find``, still opens its file; and a carriage
    return in a name stays one (lines end at a newline only)."""
    if sys.stdin is None:  # started with it closed ("<&-")
        raise UsageError("standard input is closed: '-' has no paths to read")
    return io.TextIOWrapper(
        sys.stdin.buffer,
        encoding=sys.getfilesystemencoding(),
        errors="surrogateescape",
        newline="\n",
    )
