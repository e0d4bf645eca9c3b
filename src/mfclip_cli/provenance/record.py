"""What a file says about its own origin, as report data: each check's finding with its strength.

Absence is "none found", never "authentic": most platforms strip metadata, and unsigned metadata
and public watermarks can be written by anyone. Nothing here touches a face's probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

FOUND, NONE_FOUND, NOT_CHECKED, ERROR = "found", "none_found", "not_checked", "error"

# IPTC digital source types (https://cv.iptc.org/newscodes/digitalsourcetype/) that declare
# the content was made by a generative or algorithmic model, not captured.
AI_SOURCE_TYPES = frozenset(
    {"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia", "algorithmicMedia"}
)

# C2PA validation states as the library reports them, weakest first, with the strength we print.
C2PA_STRENGTH = {
    "invalid": "signed, but the signature or its binding to these bytes does not verify",
    "valid": "signed and intact, signer not trusted (no trust anchor for it)",
    "trusted": "signed and intact, signer chains to a --c2pa-trust anchor",
}
# the status codes of the signer's trust (c2pa-rs reports one of them per manifest)
SIGNER_TRUSTED, SIGNER_UNTRUSTED = "signingCredential.trusted", "signingCredential.untrusted"
UNSIGNED = "unsigned metadata: anyone can write or strip it"
INGREDIENT = (
    "declared by an ingredient (a file this one was made from), in this file's manifest store"
)


def _compact(value: Any) -> Any:
    """A dataclass tree as JSON data, without the fields that are unset."""
    if hasattr(value, "__dataclass_fields__"):
        entries = {f.name: _compact(getattr(value, f.name)) for f in fields(value)}
        return {key: item for key, item in entries.items() if item not in (None, [], {})}
    if isinstance(value, list):
        return [_compact(item) for item in value]
    return value


@dataclass
class C2paEvidence:
    """A C2PA manifest store (Content Credentials) and how it validated."""

    status: str = NOT_CHECKED
    # invalid | valid | trusted: the library's, over the whole store (ingredients' too)
    state: str | None = None
    failures: list[str] = field(default_factory=list)  # the active manifest's failing codes
    ingredient_failures: list[str] = field(default_factory=list)  # its ingredients' manifests'
    signer_trusted: bool | None = None  # its signer chains to an anchor (None: not checked)
    signer: str | None = None  # the signing certificate's common name
    issuer: str | None = None  # its issuer (organisation)
    signing_time: str | None = None  # only where a time-stamp authority countersigned
    claim_generator: str | None = None
    digital_source_types: list[str] = field(default_factory=list)  # IPTC names, per action
    # those its ingredients' manifests declare (an edit of a generated image declares none itself)
    ingredient_digital_source_types: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    ingredients: int | None = None
    remote_url: str | None = None  # a manifest stored elsewhere: never fetched
    note: str | None = None
    error: str | None = None

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> "C2paEvidence":
        return cls(**document)


@dataclass
class Generation:
    """Generation parameters a front end wrote into the file (unsigned)."""

    tool: str  # the front end that wrote them: AUTOMATIC1111, ComfyUI, InvokeAI, NovelAI, ...
    model: str | None = None
    seed: str | None = None
    sampler: str | None = None
    prompt: str | None = None  # whole here; shortened only in the table


@dataclass
class MetadataEvidence:
    """Plain (unsigned) metadata: IPTC digital source type, software names, generation
    parameters."""

    status: str = NOT_CHECKED
    digital_source_type: str | None = None  # IPTC name, from XMP Iptc4xmpExt:DigitalSourceType
    software: list[str] = field(default_factory=list)  # "EXIF Software: ...", "XMP CreatorTool"
    generation: Generation | None = None
    note: str | None = None
    error: str | None = None

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> "MetadataEvidence":
        generation = document.get("generation")
        return cls(
            **{key: value for key, value in document.items() if key != "generation"},
            generation=Generation(**generation) if generation else None,
        )


@dataclass
class WatermarkMatch:
    """One known invisible-watermark message compared with the bits read from the pixels."""

    name: str  # sdxl, sd1, sd2
    bits_matched: int
    bits_total: int
    verdict: str  # found | not_found (at the thresholds of watermark.FOUND_AT)


@dataclass
class WatermarkEvidence:
    """The dwtDct invisible watermarks of Stable Diffusion's reference pipelines."""

    status: str = NOT_CHECKED
    matches: list[WatermarkMatch] = field(default_factory=list)
    note: str | None = None
    error: str | None = None

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> "WatermarkEvidence":
        matches = [WatermarkMatch(**match) for match in document.get("matches", [])]
        rest = {key: value for key, value in document.items() if key != "matches"}
        return cls(**rest, matches=matches)


@dataclass
class Signal:
    """One piece of evidence found, worded for a reader: where, what it claims, how strong."""

    source: str  # c2pa | c2pa-ingredient | xmp | generator | software | watermark
    claim: str
    strength: str
    declares_ai: bool


@dataclass
class ProvenanceRecord:
    """Every provenance check of one file. ``signals`` lists what was found, strongest first."""

    c2pa: C2paEvidence = field(default_factory=C2paEvidence)
    metadata: MetadataEvidence = field(default_factory=MetadataEvidence)
    watermark: WatermarkEvidence = field(default_factory=WatermarkEvidence)

    @classmethod
    def failed(cls, message: str) -> "ProvenanceRecord":
        """Every check failed for one reason (the file could not be read again)."""
        return cls(
            C2paEvidence(ERROR, error=message),
            MetadataEvidence(ERROR, error=message),
            WatermarkEvidence(ERROR, error=message),
        )

    @property
    def signals(self) -> list[Signal]:
        found: list[Signal] = []
        c2pa = self.c2pa
        if c2pa.status == FOUND:
            if c2pa.remote_url:
                claim = f"C2PA manifest stored remotely at {c2pa.remote_url} (not fetched)"
                found.append(Signal("c2pa", claim, "unverified: not fetched", False))
            else:
                types = ", ".join(c2pa.digital_source_types) or "no digital source type"
                found.append(
                    Signal(
                        "c2pa",
                        f"C2PA manifest ({types}), signed by {c2pa.signer or 'unknown'}",
                        c2pa_strength(c2pa)[1],
                        bool(AI_SOURCE_TYPES & set(c2pa.digital_source_types)),
                    )
                )
                if c2pa.ingredient_digital_source_types:
                    found.append(
                        Signal(
                            "c2pa-ingredient",
                            "C2PA ingredient manifest ("
                            + ", ".join(c2pa.ingredient_digital_source_types)
                            + ")",
                            f"{INGREDIENT}; this file's own manifest: {c2pa_strength(c2pa)[1]}",
                            bool(AI_SOURCE_TYPES & set(c2pa.ingredient_digital_source_types)),
                        )
                    )
        metadata = self.metadata
        if metadata.digital_source_type:
            found.append(
                Signal(
                    "xmp",
                    f"IPTC digital source type {metadata.digital_source_type}",
                    UNSIGNED,
                    metadata.digital_source_type in AI_SOURCE_TYPES,
                )
            )
        if metadata.generation:
            made = metadata.generation
            claim = f"{made.tool} generation parameters" + (
                f" (model {made.model})" if made.model else ""
            )
            found.append(Signal("generator", claim, UNSIGNED, True))
        for software in metadata.software:
            found.append(Signal("software", software, UNSIGNED + "; names a program", False))
        for match in self.watermark.matches:
            if match.verdict == FOUND:
                claim = f"{match.name} invisible watermark"
                strength = (
                    f"{match.bits_matched}/{match.bits_total} bits match a public watermark "
                    "(anyone can embed it)"
                )
                found.append(Signal("watermark", claim, strength, True))
        return found

    @property
    def declares_ai(self) -> bool:
        """Whether any evidence found, at any strength, declares an AI or algorithmic origin."""
        return any(signal.declares_ai for signal in self.signals)

    @property
    def errors(self) -> list[str]:
        return [
            f"{name}: {check.error}"
            for name, check in (("c2pa", self.c2pa), ("metadata", self.metadata))
            if check.error
        ] + ([f"watermark: {self.watermark.error}"] if self.watermark.error else [])

    def summary(self) -> str:
        """A few words for the table: what was found, or that nothing was."""
        nothing = "none found by the checks that ran" if self.errors else "none found"
        parts = [_short(signal, self.c2pa) for signal in self.signals] or [nothing]
        if self.errors:
            failed = ", ".join(error.split(":")[0] for error in self.errors)
            parts.append(f"provenance error ({failed})")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "declares_ai": self.declares_ai,
            "signals": _compact(self.signals),
            "c2pa": _compact(self.c2pa),
            "metadata": _compact(self.metadata),
            "watermark": _compact(self.watermark),
        }

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> "ProvenanceRecord":
        """The inverse of ``to_dict`` (``declares_ai`` and ``signals`` are derived again)."""
        return cls(
            c2pa=C2paEvidence.from_dict(document.get("c2pa", {})),
            metadata=MetadataEvidence.from_dict(document.get("metadata", {})),
            watermark=WatermarkEvidence.from_dict(document.get("watermark", {})),
        )


C2PA_SHORT = {"invalid": "invalid", "valid": "valid, signer untrusted", "trusted": "trusted"}


def c2pa_strength(c2pa: C2paEvidence) -> tuple[str, str]:
    """How far a manifest holds, in a few words for the table and in full, from its state and
    its codes: the library's state covers the whole store, so a file whose own manifest is
    intact and trusted reads "valid" for an ingredient's untrusted signer, and "invalid" for an
    ingredient's broken signature."""
    state = c2pa.state or "unknown"
    own = [code for code in c2pa.failures if code != SIGNER_UNTRUSTED]
    by_ingredient = state == "invalid" and not own and c2pa.ingredient_failures
    if state not in ("valid", "invalid") or (state == "invalid" and not by_ingredient):
        return C2PA_SHORT.get(state, state), C2PA_STRENGTH.get(state, state)
    reasons = [f"this manifest fails {', '.join(own)}"] if own else []
    if c2pa.ingredient_failures:
        reasons.append(f"an ingredient's manifest fails {', '.join(c2pa.ingredient_failures)}")
    long = C2PA_STRENGTH["trusted" if c2pa.signer_trusted else "valid"]
    short = "intact, ingredient invalid" if by_ingredient else "valid"
    short += ", signer trusted" if c2pa.signer_trusted else ", signer untrusted"
    return short, long + "".join(f"; {reason}" for reason in reasons)


def _short(signal: Signal, c2pa: C2paEvidence) -> str:
    """A signal in a few words for the table."""
    if signal.source == "c2pa":
        if c2pa.remote_url:
            return "C2PA remote manifest (not fetched)"
        state = c2pa_strength(c2pa)[0]
        types = "/".join(c2pa.digital_source_types)
        return f"C2PA {state}" + (f": {types}" if types else "")
    if signal.source == "c2pa-ingredient":
        return "C2PA ingredient: " + "/".join(c2pa.ingredient_digital_source_types)
    if signal.source == "watermark":
        return f"{signal.claim} {signal.strength.split(' ')[0]}"
    return _cut(signal.claim, 60) + ("" if signal.source == "software" else " (unsigned)")


def _cut(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters, cut after a whole word with an ellipsis: a model
    name cut in two reads as another model."""
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    return (head.rsplit(" ", 1)[0] if " " in head else head) + "…"
