"""Plain metadata that speaks to a file's origin: the IPTC digital source type in XMP, the
software named in EXIF and XMP, and the generation parameters that Stable Diffusion front ends
write (AUTOMATIC1111 / Forge / Fooocus, ComfyUI, InvokeAI, NovelAI, SwarmUI, Midjourney). All
of it is unsigned.

Pillow reads the containers (PNG text chunks, EXIF, XMP packets) from the header, with its own
size limits and without decoding pixels (a PNG's chunks after its pixel data are walked here:
Pillow reaches them only by decoding the whole image); a PNG without generation texts is read
for the "stealth" info hidden in its pixels' low bits, decoded only where its first rows begin
with a signature (``stealth.py``); sd-parsers interprets the front ends' parameter formats,
and ``comfyui.py`` the ComfyUI graph that comes without the editor graph sd-parsers needs.
"""

from __future__ import annotations

import io
import json
import re
import struct
import xml.etree.ElementTree as ElementTree
import zlib
from typing import Any, Callable, Iterator

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from mfclip_cli.faces.decode import (
    PNG_SIGNATURE,
    crc_holds,
    exif_damage,
    png_chunks,
    png_of_its_pixels,
    readable_by_pillow,
)
from mfclip_cli.provenance.c2pa import source_type_name
from mfclip_cli.provenance.comfyui import read_api_prompt, scalar
from mfclip_cli.provenance.record import (
    ERROR,
    FOUND,
    NONE_FOUND,
    NOT_CHECKED,
    Generation,
    MetadataEvidence,
)
from mfclip_cli.provenance.stealth import StealthError, read_stealth, signature_possible

IPTC_EXT = "{http://iptc.org/std/Iptc4xmpExt/2008-02-29/}"
XMP_BASIC = "{http://ns.adobe.com/xap/1.0/}"
RDF_RESOURCE = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}resource"
MAX_XMP_BYTES = 4 << 20  # an XMP packet beyond this is refused, not parsed
EXIF_SOFTWARE, EXIF_IFD, EXIF_USER_COMMENT = 0x0131, 0x8769, 0x9286
# the character codes an EXIF UserComment opens with (EXIF 2.3, table 9); undefined is 8 NULs
USER_COMMENT_CODES = (b"ASCII\x00\x00\x00", b"UNICODE\x00", b"JIS\x00\x00\x00\x00\x00", b"\x00" * 8)
# ComfyUI's WebP (its animated and video outputs) has no text chunks: it writes "prompt:{json}"
# into EXIF Model and "workflow:{json}" into EXIF Make; custom save nodes write "Prompt:" and
# "Workflow:" there or into ImageDescription
COMFY_EXIF_TAGS = (0x0110, 0x010F, 0x010E)
EXIF_IMAGE_DESCRIPTION = 0x010E
# ImageMagick's PNG profiles: "\nxmp\n   LENGTH\nHEX DIGITS..." in a text chunk of this key
RAW_XMP_KEY = "Raw profile type xmp"
# the end of a Midjourney description; searched from "Job ID:" on, never backtracking over the
# prompt (a lazy ".*?" before "\s*" took minutes on a run of spaces)
MIDJOURNEY_JOB = re.compile(
    r"Job ID:[ \t]*[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}[ \t\r\n]*\Z",
    re.I,
)
MIDJOURNEY_VERSION = re.compile(r"(?:^|\s)--(v|version|niji)\s+([\w.]+)")
MIDJOURNEY_SEED = re.compile(r"(?:^|\s)--seed\s+(\d+)")
SWARMUI_FIELDS = ("model", "seed", "sampler", "prompt")  # its sui_image_params keys, as ours
TIFF_XMP = 700
# text keys of the generation front ends (sd-parsers' triggers); others are not passed on
GENERATION_KEYS = frozenset(
    {
        "parameters",
        "prompt",
        "workflow",
        "invokeai_metadata",
        "invokeai_graph",
        "sd-metadata",
        "Dream",
        "Description",
        "Software",
        "Source",
        "Comment",
        "fooocus_scheme",
    }
)

PARAMETER_KEYS = GENERATION_KEYS - {"Software"}  # an editor names itself in Software too


class MetadataError(ValueError):
    """Metadata present but unreadable (broken XMP, a refused packet); the message is for the
    report."""


def read_metadata(data: bytes) -> MetadataEvidence:
    """The origin-related metadata in an image file's bytes (a HEIC/HEIF one's EXIF and XMP
    items through pillow-heif). Raises ``MetadataError`` (or Pillow's errors) for metadata that
    cannot be read; the caller records them. A PNG chunk that cannot be read (its CRC fails, or
    its text inflates past Pillow's limit), before or after the pixels, is the check's error,
    and the file's other chunks are still read (audit O M4, audit P M1, M2)."""
    readable_by_pillow(data[:12])
    if not data:
        return MetadataEvidence(NOT_CHECKED, note="empty file")
    unread: list[str] = []
    if data[:8] == PNG_SIGNATURE:
        data, unread = _without_unreadable_chunks(data)
    try:
        evidence = _read_metadata(data)
    except UnidentifiedImageError:  # not an image: no metadata to read, no check failed (its
        # record's error says what it is; "provenance error" beside it said it twice: audit W L3)
        return MetadataEvidence(NOT_CHECKED, note="not an image format Pillow reads")
    if unread:  # what they held is unknown: the check's error, beside what the others hold
        said = f"MetadataError: PNG chunk(s) not read: {', '.join(unread)}"
        evidence.error = f"{said}; {evidence.error}" if evidence.error else said
        if evidence.status == NONE_FOUND:
            evidence.status = ERROR
    return evidence


def _without_unreadable_chunks(data: bytes) -> tuple[bytes, list[str]]:
    """A PNG's bytes without its chunks that cannot be read, and which of the metadata ones
    were left out: a chunk whose CRC fails (Pillow refused the whole file before its pixels,
    and read one after them as if intact; a damaged PLTE or tIME goes too, unnamed: it holds no
    metadata), a compressed text inflating past Pillow's limit (its ValueError ended the check),
    and compressed texts past the file's text budget (thousands of small ones made Pillow give
    up on all, after minutes of inflating). ``data`` itself where there is none. The pixel data
    (IDAT) is neither checked nor inflated here."""
    kept, unread, chunks = [], [], 0
    budget = TEXT_BUDGET  # bytes of text inflated, in all, to look at them
    for kind, chunk in png_chunks(data):
        chunks += 1
        name = kind.decode("latin-1")
        if kind != b"IDAT" and not crc_holds(chunk):
            if kind in PNG_METADATA_CHUNKS:
                unread.append(f"{name} (its CRC fails)")
            continue
        if kind in (b"zTXt", b"iTXt"):
            body = bytes(chunk[8:-4])
            keyword = body.split(b"\0", 1)[0].decode("latin-1")
            size = _inflated_size(kind, body, min(budget, TEXT_CHUNK_LIMIT) + 1)
            if size is not None and size > TEXT_CHUNK_LIMIT:
                limit = TEXT_CHUNK_LIMIT >> 20
                unread.append(f"{name} {keyword!r} (its text inflates past {limit} MiB)")
                budget -= TEXT_CHUNK_LIMIT
                continue
            if size is not None and size >= budget:
                limit = TEXT_BUDGET >> 20
                unread.append(f"{name} {keyword!r} (past the file's {limit} MiB of text)")
                budget = 0
                continue
            budget -= size or 0
        kept.append(chunk)
    if not unread and len(kept) == chunks:
        return data, []
    return PNG_SIGNATURE + b"".join(kept), unread


def _inflated_size(kind: bytes, body: bytes, most: int) -> int | None:
    """How many bytes a zTXt or compressed iTXt chunk's text inflates to, counted to ``most``;
    None for an uncompressed iTXt, or a stream zlib cannot read (Pillow says what is wrong)."""
    _, _, rest = body.partition(b"\0")
    if kind == b"iTXt":
        if len(rest) < 2 or rest[0] == 0:  # not compressed (Pillow takes any other flag as so)
            return None
        rest = rest[2:].split(b"\0", 2)[-1]  # after the language and translated keyword
    else:
        rest = rest[1:]  # after the compression method
    try:
        return len(zlib.decompressobj().decompress(rest, max(most, 1)))
    except zlib.error:
        return None


def _read_metadata(data: bytes) -> MetadataEvidence:
    with Image.open(io.BytesIO(data)) as image:
        info = dict(image.info)
        if image.format == "PNG":  # its getexif() decodes every pixel first
            info.update(_png_chunks_after_pixels(data))
        damage = exif_damage(info.get("exif"))
        exif = Image.Exif()  # a damaged block: Pillow read it as empty, warning of no file
        if image.format == "PNG" and info.get("exif") and damage is None:
            exif.load(info["exif"])
        elif image.format != "PNG" and damage is None:
            exif = image.getexif()
        xmp = info.get("xmp") or info.get("XML:com.adobe.xmp") or _raw_profile(info)
        if xmp is None and hasattr(image, "tag_v2"):  # TIFF keeps XMP in a tag
            xmp = image.tag_v2.get(TIFF_XMP)
        evidence = MetadataEvidence(NONE_FOUND)
        if image.format == "PNG" and not PARAMETER_KEYS & set(info) and signature_possible(data):
            info.update(_stealth_texts(image, data, evidence))
    if damage is not None:
        evidence.error = f"MetadataError: {damage}"
    if exif.get(EXIF_SOFTWARE):
        evidence.software.append(f"EXIF Software: {_text(exif[EXIF_SOFTWARE])}")
    if xmp:
        try:
            source_type, creator_tool = _from_xmp(xmp)
        except MetadataError as error:  # what the other sources hold still counts (audit O M1)
            evidence.error = f"MetadataError: {error}"
        else:
            evidence.digital_source_type = source_type
            if creator_tool:
                evidence.software.append(f"XMP CreatorTool: {creator_tool}")
    texts = _comfy_exif_texts(exif) | {
        key: value
        for key, value in info.items()
        if key in GENERATION_KEYS and isinstance(value, str)
    }
    if "Software" in texts:
        evidence.software.append(f"PNG Software: {texts['Software']}")
    evidence.generation = _generation(texts) if texts else None
    # a UserComment where the texts hold no generation (a PNG's Software beside it hid it): in
    # the Exif IFD as A1111 writes it, or in IFD0 as Fooocus does (audit O H2, L1)
    comment = exif.get_ifd(EXIF_IFD).get(EXIF_USER_COMMENT) or exif.get(EXIF_USER_COMMENT)
    if evidence.generation is None and comment:
        evidence.generation = _generation({"parameters": _user_comment(comment)})
    description = exif.get(EXIF_IMAGE_DESCRIPTION)
    if evidence.generation is None and description:  # parameters some tools put there
        evidence.generation = _generation({"parameters": _text(description)})
    if evidence.software or evidence.digital_source_type or evidence.generation:
        evidence.status = FOUND
    elif evidence.error:
        evidence.status = ERROR
    return evidence


def _stealth_in(image: Image.Image, data: bytes) -> tuple[str, str] | None:
    """``read_stealth`` of ``image``, or of the pixels the scan reads where the whole file does
    not decode (``png_of_its_pixels``): an APNG whose animation is damaged, its default image,
    was scanned while this check said "the pixels do not decode" (audit AH F8)."""
    try:
        return read_stealth(image)
    except StealthError:
        raise
    except (OSError, ValueError, SyntaxError):
        mended = png_of_its_pixels(data)
        if mended is None:
            raise
    with Image.open(io.BytesIO(mended)) as pixels:
        return read_stealth(pixels)


def _stealth_texts(image: Image.Image, data: bytes, evidence: MetadataEvidence) -> dict[str, str]:
    """The texts hidden in the pixels of a PNG, ``image`` opened from ``data`` (``stealth.py``):
    NovelAI's text chunks as a JSON object, or a parameters text. Where they were found, or why
    they could not be read, is the evidence's note (a broken payload does not hide what the
    other metadata says)."""
    try:
        found = _stealth_in(image, data)
    except StealthError as error:
        evidence.note = f"stealth PNG info unreadable: {error}"
        return {}
    except (OSError, ValueError, SyntaxError) as error:  # pixels that do not decode
        evidence.note = f"stealth PNG info not checked: the pixels do not decode ({error})"
        return {}
    if found is None:
        return {}
    payload, signature = found
    evidence.note = f"{len(payload)} characters hidden in the pixels' low bits ({signature})"
    try:
        document = json.loads(payload)
    except ValueError:
        return {"parameters": payload}
    if not isinstance(document, dict):
        return {"parameters": payload}
    return {key: value for key, value in document.items() if isinstance(value, str)}


PNG_METADATA_CHUNKS = (b"tEXt", b"zTXt", b"iTXt", b"eXIf")
# Pillow's limits on a PNG's text, which mfclip raises for one chunk (faces/decode/pixels.py):
# what the metadata check inflates at most, for a chunk and for all of a file's
TEXT_CHUNK_LIMIT = PngImagePlugin.MAX_TEXT_CHUNK
TEXT_BUDGET = PngImagePlugin.MAX_TEXT_MEMORY


def _png_chunks_after_pixels(data: bytes) -> dict[str, Any]:
    """The text and EXIF chunks a PNG holds after its pixel data, parsed by Pillow's own chunk
    readers without decoding a pixel: a file that only declares 100000 x 100000 pixels cost all
    the memory of the machine when ``getexif()`` decoded it, and every other PNG a second
    decode."""
    offset, after_pixels = len(PNG_SIGNATURE), None
    for kind, chunk in png_chunks(data):
        offset += len(chunk)
        if kind in (b"IDAT", b"fdAT"):
            after_pixels = offset
    if after_pixels is None:
        return {}
    stream = PngImagePlugin.PngStream(io.BytesIO(data))
    stream.fp.seek(after_pixels)
    while True:
        try:
            kind, position, length = stream.read()
        except (struct.error, SyntaxError):
            break
        if kind == b"IEND":
            break
        if kind in PNG_METADATA_CHUNKS:
            stream.call(kind, position, length)
        else:
            stream.fp.seek(length, io.SEEK_CUR)
        stream.fp.read(4)  # its CRC
    return stream.im_info


def _comfy_exif_texts(exif: Image.Exif) -> dict[str, str]:
    """The ComfyUI ``prompt`` and ``workflow`` texts a WebP keeps in EXIF Model and Make (and
    custom save nodes in ImageDescription, capitalised)."""
    texts = {}
    for tag in COMFY_EXIF_TAGS:
        key, _, value = _text(exif.get(tag, "")).partition(":")
        key = key.strip().lower()  # custom save nodes write "Prompt:" and "Workflow:"
        if key in ("prompt", "workflow") and value.lstrip().startswith("{"):
            texts[key] = value
    return texts


def _raw_profile(info: dict[str, Any]) -> bytes | None:
    """The XMP packet ImageMagick keeps in a PNG text chunk, hex-encoded after a header line
    naming the profile and one giving its length; None without one. A chunk that does not
    decode is handed on as it is, for the XMP reader to say it is not XMP."""
    raw = info.get(RAW_XMP_KEY)
    if not isinstance(raw, str):
        return None
    lines = raw.strip().split("\n", 2)
    try:
        return bytes.fromhex("".join(lines[2].split()))
    except (IndexError, ValueError):
        return raw.encode("utf-8")


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").rstrip("\x00")
    return str(value).rstrip("\x00")


def _from_xmp(packet: bytes | str) -> tuple[str | None, str | None]:
    """(IPTC digital source type, xmp:CreatorTool) of an XMP packet. A packet with a DTD is
    refused (no entity can expand), as is one too large or not well-formed."""
    raw = packet.encode("utf-8") if isinstance(packet, str) else bytes(packet)
    if len(raw) > MAX_XMP_BYTES:
        raise MetadataError(f"XMP packet of {len(raw)} bytes refused (over {MAX_XMP_BYTES})")
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise MetadataError("XMP packet declares a DTD or entities (refused)")
    start = raw.find(b"<x:xmpmeta")
    end = raw.rfind(b"</x:xmpmeta>")
    if start >= 0 and end > start:
        raw = raw[start : end + len(b"</x:xmpmeta>")]
    try:
        root = ElementTree.fromstring(raw)
    except ElementTree.ParseError as error:
        raise MetadataError(f"XMP is not well-formed XML: {error}") from None
    source_type = creator_tool = None
    for element in root.iter():
        for name, value in element.attrib.items():
            if name == f"{IPTC_EXT}DigitalSourceType":
                source_type = value
            elif name == f"{XMP_BASIC}CreatorTool":
                creator_tool = value
        if element.tag == f"{IPTC_EXT}DigitalSourceType":
            source_type = element.get(RDF_RESOURCE) or (element.text or "").strip() or None
        elif element.tag == f"{XMP_BASIC}CreatorTool":
            creator_tool = (element.text or "").strip() or None
    return (source_type_name(source_type) if source_type else None), creator_tool


def _user_comment(raw: Any) -> str:
    """EXIF UserComment: an 8-byte character-code prefix, then the text; or, as Fooocus writes
    it, the text alone (its first 8 bytes were cut as a prefix). A1111 writes UNICODE as UTF-16
    big-endian (piexif), other writers in their TIFF byte order: the order that reads more of
    the text as ASCII wins (the parameters' keys are), big-endian on a tie. The first byte chose
    before, and a prompt opening in Cyrillic, CJK or an emoji read as little-endian noise."""
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, (bytes, bytearray)):  # a number: bytes(4e8) would be 400 MB of zeros
        return ""
    raw = bytes(raw)
    prefix = raw[:8]
    if prefix not in USER_COMMENT_CODES:
        return raw.decode("utf-8", "replace").rstrip("\x00")
    body = raw[8:]
    if prefix != b"UNICODE\x00":
        return body.decode("utf-8", "replace").rstrip("\x00")
    if body[:2] in (b"\xfe\xff", b"\xff\xfe"):  # a byte-order mark says it
        return body.decode("utf-16", "replace").rstrip("\x00")
    readings = [body.decode(order, "replace") for order in ("utf-16-be", "utf-16-le")]
    return max(readings, key=lambda text: sum(char.isascii() for char in text)).rstrip("\x00")


def _generation(texts: dict[str, str]) -> Generation | None:
    """The first front end whose format ``texts`` parse as (sd-parsers' parsers, in its order)."""
    from sd_parsers.exceptions import ParserError
    from sd_parsers.parsers import MANAGED_PARSERS

    for parser_class in MANAGED_PARSERS:
        try:
            found = parser_class().parse(dict(texts))
        except (ParserError, KeyError, ValueError, TypeError, AttributeError):
            continue
        sampler = _field(lambda: found.samplers[0])
        return Generation(
            tool=str(found.generator.value),
            # the first sampler's model; else the least by name, as sd-parsers keeps a set,
            # whose order changes from one process to the next
            model=_field(lambda: _model_name(sampler.model))
            or _field(lambda: min(filter(None, map(_model_name, found.models)))),
            seed=_field(lambda: scalar(sampler.parameters["seed"])),
            sampler=_field(lambda: scalar(sampler.name)),
            prompt=_field(lambda: _one_text(found.full_prompt)),
        )
    # a ComfyUI graph without the editor graph (an image made through ComfyUI's HTTP API) and
    # the front ends sd-parsers does not know
    return (
        read_api_prompt(texts.get("prompt"))
        or _swarmui(texts.get("parameters"))
        or _midjourney(texts.get("Description"))
    )


def _swarmui(parameters: str | None) -> Generation | None:
    """SwarmUI's parameters, which sd-parsers does not know: JSON in the same ``parameters``
    text as AUTOMATIC1111's, ``{"sui_image_params": {"prompt", "model", "seed", ...}}``."""
    try:
        found = json.loads(parameters or "")
    except ValueError:
        return None
    made = found.get("sui_image_params") if isinstance(found, dict) else None
    if not isinstance(made, dict):
        return None
    texts = {key: None if made.get(key) is None else str(made[key]) for key in SWARMUI_FIELDS}
    return Generation(tool="SwarmUI", **texts)


def _midjourney(description: str | None) -> Generation | None:
    """Midjourney's web downloads, which sd-parsers does not know: the prompt, its parameters
    and the job in the PNG ``Description`` text, ``"a cat --ar 2:1 --v 6 Job ID: <uuid>"``."""
    text = description or ""
    job = MIDJOURNEY_JOB.search(text)
    if job is None:
        return None
    prompt = text[: job.start()].strip() or None
    # the last of a parameter given twice is the one Midjourney applies
    version = _last(MIDJOURNEY_VERSION.finditer(prompt or ""))
    seed = _last(MIDJOURNEY_SEED.finditer(prompt or ""))
    return Generation(
        tool="Midjourney",
        model=("niji" if version[1] == "niji" else "v") + version[2] if version else None,
        seed=seed[1] if seed else None,
        prompt=prompt,
    )


def _last(matches: Iterator[re.Match[str]]) -> re.Match[str] | None:
    found = None
    for found in matches:
        pass
    return found


def _one_text(prompt: Any) -> str:
    """A prompt as one string: Fooocus writes its full prompt as a list (the styled prompt and
    its expansion), which sd-parsers passes on."""
    return ", ".join(map(str, prompt)) if isinstance(prompt, list) else str(prompt)


def _model_name(model: Any) -> str | None:
    return None if model is None else scalar(model.name or model.hash)


def _field(read: Callable[[], Any]) -> Any:
    """One of sd-parsers' fields that it computes only when asked, or None where the front end's
    data breaks it (a ComfyUI LoRA loader's graph link, taken for a model name, cannot be
    hashed): the front end was recognised all the same, which is what declares the origin."""
    try:
        return read() or None
    except Exception:  # noqa: BLE001 - any failure of a parser's property loses that field only
        return None
