"""A scan report's meta: what ran, on what, with which settings (a ``--resume`` must match
them)."""

from __future__ import annotations

import os

from mfclip_cli.engines.scan.duplicates import MAX_DISTANCE
from mfclip_cli.engines.scan.request import ScanRequest
from mfclip_cli.engines.scan.scanner import Scanner
from mfclip_cli.engines.scan.settings import ScanSettings
from mfclip_cli.engines.scan.stability import STABILITY_PERTURBATIONS
from mfclip_cli.engines.weights.store import (
    LoadedWeights,
    weights_record,
)
from mfclip_cli.schemas import report_header
from mfclip_cli.scoring.attribution import attribution_summary
from mfclip_cli.scoring.calibration import (
    calibration_summary,
    operating_point,
    threshold_key,
)
from mfclip_cli.scoring.fpr_bounds import OPERATING_POINT_FIELDS
from mfclip_cli.scoring.inconclusive import shown_threshold
from mfclip_cli.scoring.ood import ood_summary
from mfclip_cli.scoring.precision import calibration_at
from mfclip_cli.timestamps import utc_now


def scan_meta(request: ScanRequest, scanner: Scanner, primary: LoadedWeights, inputs: int) -> dict:
    """The report's meta: what ran, on what, with which settings (a resume must match them).
    With several checkpoints, ``compared_weights`` names them all, the primary first."""
    settings, stage = request.settings, scanner.model_stage
    several = len(stage.scorers) > 1
    precision = stage.primary.precision
    assert precision is not None  # set by the Scanner
    compared = [
        {**(s.weights or {}), "precision": s.precision.used if s.precision else None}
        for s in stage.scorers
    ]
    calibration = calibration_at(primary.info.calibration, precision.used)
    return {
        **report_header("meta"),
        "weights": weights_record(primary),
        **({"compared_weights": compared} if several else {}),
        "demo": primary.demo,
        "device": str(scanner.device),
        "precision": precision.record(),
        "calibration": calibration_summary(calibration),
        "ood": ood_summary(stage.ood),
        "attribution": attribution_summary(primary.info, stage.primary.attribution),
        "thresholds": {
            "fake": settings.fake_threshold,
            **(
                {"fake_from": threshold_key(settings.fake_threshold_fpr)}
                if settings.fake_threshold_fpr is not None
                else {}
            ),
            # each checkpoint's, where several are compared: fpr:X is each one's own threshold
            **(
                {"fake_compared": [stage.fake_threshold(s) for s in stage.scorers]}
                if several
                else {}
            ),
            "detection": list(settings.detection_thresholds),
            "min_face": settings.min_face,
            "detect_max_side": settings.detect_max_side,
            "max_pixels": settings.max_pixels,  # larger images refused (--max-megapixels)
            # in original pixels; a file record says where larger
            "smallest_face": scanner.smallest_face,
        },
        **(
            {"operating_point": operating_point_used(calibration, settings.fake_threshold_fpr)}
            if settings.fake_threshold_fpr is not None
            else {}
        ),
        "video_sampling": {"frames": settings.frames} if settings.frames else {"fps": settings.fps},
        # which provenance checks ran, with which libraries (null: --no-provenance)
        "provenance": None if settings.provenance is None else settings.provenance.meta(),
        "verdicts": verdicts_meta(settings, scanner),
        "started_utc": utc_now(),
        "cwd": os.getcwd(),
        "inputs": inputs,
    }


def operating_point_used(calibration: dict | None, fpr: float) -> dict:
    """What the primary checkpoint's validation split says about the ``fpr:X`` threshold in use
    (``calibration``: the one at the precision it runs), and whether an unsupported one was
    accepted (``--accept-unsupported-fpr``)."""
    entry = operating_point(calibration, fpr)
    return {
        "target": threshold_key(entry["fpr"]),
        **{key: entry[key] for key in OPERATING_POINT_FIELDS},
        "accepted_unsupported": not entry["supported"],
    }


def verdicts_meta(settings: ScanSettings, scanner: Scanner) -> dict:
    """What made a face inconclusive in this scan (docs/verdicts.md): whether the band is on, the
    primary's stored uncertainty threshold and the measure face records' uncertainty follows, its
    family threshold, whether OOD statistics flag faces, and the re-encodings of --stability."""
    stage = scanner.model_stage
    band = stage.primary.band

    def reached(threshold: float | None) -> bool | None:
        """Whether a stored threshold's target was reached (a shown 0 is then a threshold, not
        "every face": audit Q L2); None where there is none, or the band is off."""
        return None if threshold is None or not settings.inconclusive else threshold >= 0

    return {
        "inconclusive": settings.inconclusive,
        "uncertainty_threshold": shown_threshold(band.threshold) if settings.inconclusive else None,
        "uncertainty_threshold_reached": reached(band.threshold),
        "measure": band.measure,
        "family_threshold": shown_threshold(band.family_threshold)
        if settings.inconclusive
        else None,
        "family_threshold_reached": reached(band.family_threshold),
        "ood": settings.inconclusive and stage.ood is not None,
        "stability": [p.name for p in STABILITY_PERTURBATIONS] if settings.stability else None,
        "near_duplicate_bits": MAX_DISTANCE if settings.duplicates else None,
    }
