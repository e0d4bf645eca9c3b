"""Files that carry provenance evidence, made at test time: C2PA manifests signed by a CA made
here, front ends' PNG text chunks, XMP and EXIF, and invisible-watermark's dwtDct encoder."""

from __future__ import annotations

import datetime
import gzip
import io
import json
import struct
import zlib

import cv2
import numpy as np
from PIL import Image, PngImagePlugin

from mfclip_cli.provenance.watermark import HAAR

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
A1111_PARAMETERS = (
    "portrait photo of an astronaut, studio light\n"
    "Negative prompt: blurry\n"
    "Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234567, Size: 512x512, "
    "Model hash: 31e35c80fc, Model: sd_xl_base_1.0"
)
COMFY_PROMPT = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl_base.safetensors"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a smiling woman", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "ugly", "clip": ["4", 1]}},
    "5": {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": 512, "height": 512, "batch_size": 1},
    },
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 42,
            "steps": 20,
            "cfg": 8,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": ["8", 0]}},
}
# the editor graph ComfyUI saves beside the prompt: links [id, from node, slot, to node, slot, type]
COMFY_WORKFLOW = {
    "nodes": [{"id": int(key), "type": node["class_type"]} for key, node in COMFY_PROMPT.items()],
    "links": [
        [1, 4, 0, 3, 0, "MODEL"],
        [2, 6, 0, 3, 1, "CONDITIONING"],
        [3, 7, 0, 3, 2, "CONDITIONING"],
        [4, 5, 0, 3, 3, "LATENT"],
        [5, 4, 1, 6, 0, "CLIP"],
        [6, 4, 1, 7, 0, "CLIP"],
        [7, 3, 0, 8, 0, "LATENT"],
        [8, 4, 2, 8, 1, "VAE"],
        [9, 8, 0, 9, 0, "IMAGE"],
    ],
}
INVOKEAI_METADATA = {
    "generation_mode": "txt2img",
    "positive_prompt": "an old man with a beard",
    "negative_prompt": "",
    "width": 512,
    "height": 512,
    "seed": 987654,
    "cfg_scale": 7.5,
    "steps": 30,
    "scheduler": "euler",
    "model": {"model_name": "stable-diffusion-v1-5", "base_model": "sd-1", "model_type": "main"},
}
# SwarmUI's "parameters" text (the layout its public readers parse; no SwarmUI PNG is public)
SWARMUI_PARAMETERS = {
    "sui_image_params": {
        "prompt": "a portrait of an old sailor",
        "negativeprompt": "blurry",
        "model": "OfficialStableDiffusion/sd_xl_base_1.0",
        "seed": 1234,
        "steps": 20,
        "cfgscale": 7,
        "sampler": "euler",
        "width": 1024,
        "height": 1024,
    },
    "sui_extra_data": {"date": "2024-06-01", "generation_time": "3.1 seconds"},
}
NOVELAI_CHUNKS = {
    "Title": "AI generated image",
    "Description": "a girl with red hair",
    "Software": "NovelAI",
    "Source": "Stable Diffusion 1D44365E",
    "Comment": json.dumps(
        {
            "steps": 28,
            "sampler": "k_euler_ancestral",
            "seed": 2718281,
            "strength": 0.7,
            "noise": 0.2,
            "scale": 11.0,
            "uc": "lowres",
        }
    ),
}


def picture(seed: int = 0, size: int = 512) -> np.ndarray:
    """A smooth random picture (a camera-like spectrum, not white noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


def png_bytes(rgb: np.ndarray, texts: dict[str, str] | None = None, itxt=()) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in (texts or {}).items():
        info.add_text(key, value, zip=key in itxt)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def png_chunk(kind: bytes, body: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def with_chunk(png: bytes, chunk: bytes) -> bytes:
    """``chunk`` inserted right after IHDR."""
    return png[:33] + chunk + png[33:]


def xmp_packet(body: str) -> str:
    return (
        '<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" '
        'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
        f'xmlns:xmp="http://ns.adobe.com/xap/1.0/" {body}/>'
        '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    )


def jpeg_bytes(rgb: np.ndarray, format: str = "JPEG", **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format, quality=90, **save)
    return buffer.getvalue()


def heic_bytes(rgb: np.ndarray, **save) -> bytes:
    """A HEIC as a phone writes it (HEVC in a HEIF container, brand ``heic``): libheif's x265
    encoder through pillow-heif, with ``exif`` or ``xmp`` bytes where given."""
    from pillow_heif import from_pillow

    buffer = io.BytesIO()
    from_pillow(Image.fromarray(rgb)).save(buffer, quality=90, **save)
    return buffer.getvalue()


def a1111_jpeg(rgb: np.ndarray, parameters: str = A1111_PARAMETERS, **save) -> bytes:
    """What AUTOMATIC1111's WebUI writes into a JPEG (or, with ``format="WEBP"``, a WebP): the
    parameters as an EXIF UserComment, "UNICODE" then big-endian UTF-16 (piexif's encoding)."""
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + parameters.encode("utf-16-be")
    return jpeg_bytes(rgb, exif=exif.tobytes(), **save)


# -- C2PA ----------------------------------------------------------------------------------------


class Authority:
    """A root CA and a leaf signing certificate made now (c2pa-rs refuses a self-signed leaf)."""

    def __init__(self):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        def name(common: str) -> x509.Name:
            return x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, common),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mfclip test CA"),
                ]
            )

        def usage(**granted) -> x509.KeyUsage:
            flags = dict.fromkeys(
                (
                    "digital_signature content_commitment key_encipherment data_encipherment "
                    "key_agreement key_cert_sign crl_sign encipher_only decipher_only"
                ).split(),
                False,
            )
            return x509.KeyUsage(**{**flags, **granted})

        now = datetime.datetime.now(datetime.timezone.utc)
        ca_key, leaf_key = (
            ec.generate_private_key(ec.SECP256R1()),
            ec.generate_private_key(ec.SECP256R1()),
        )

        def certificate(subject, issuer, key, signing_key, extensions):
            builder = (
                x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(issuer)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            )
            for extension, critical in extensions:
                builder = builder.add_extension(extension, critical)
            return builder.sign(signing_key, hashes.SHA256())

        ca = certificate(
            name("mfclip test root"),
            name("mfclip test root"),
            ca_key,
            ca_key,
            [
                (x509.BasicConstraints(ca=True, path_length=None), True),
                (usage(key_cert_sign=True, crl_sign=True), True),
            ],
        )
        leaf = certificate(
            name("Test Generator Signer"),
            ca.subject,
            leaf_key,
            ca_key,
            [
                (x509.BasicConstraints(ca=False, path_length=None), True),
                (usage(digital_signature=True), True),
                (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False),
                (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
            ],
        )
        pem = serialization.Encoding.PEM
        self.ca_pem = ca.public_bytes(pem)
        self.chain_pem = leaf.public_bytes(pem) + self.ca_pem
        self.key_pem = leaf_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def sign(
        self,
        asset: bytes,
        mime: str,
        source_type: str = "trainedAlgorithmicMedia",
        remote_url: str | None = None,
    ) -> bytes:
        """``asset`` with a manifest whose c2pa.created action declares ``source_type``:
        embedded, or only referenced at ``remote_url``."""
        created = {"action": "c2pa.created", "digitalSourceType": IPTC + source_type}
        return self._signed([created], asset, mime, remote_url=remote_url)

    def edit(self, signed: bytes, mime: str) -> bytes:
        """``signed`` opened and cropped in a C2PA editor: a manifest declaring no source type
        over the original's, its parentOf ingredient (the layout the C2PA spec gives an edit)."""
        actions = [
            {"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent"]}},
            {"action": "c2pa.cropped"},
        ]
        return self._signed(actions, signed, mime, parent=signed)

    def _signed(
        self,
        actions: list[dict],
        asset: bytes,
        mime: str,
        remote_url: str | None = None,
        parent: bytes | None = None,
    ) -> bytes:
        import c2pa

        manifest = {
            "claim_generator_info": [{"name": "test-generator", "version": "1.0"}],
            "title": "generated",
            "assertions": [{"label": "c2pa.actions", "data": {"actions": actions}}],
        }
        signer = c2pa.Signer.from_info(
            c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, self.chain_pem, self.key_pem, None)
        )
        context = c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}}})
        output = io.BytesIO()
        with c2pa.Builder(manifest, context=context) as builder:
            if remote_url:
                builder.set_no_embed()
                builder.set_remote_url(remote_url)
            if parent is not None:
                ingredient = {"title": "parent", "relationship": "parentOf", "label": "parent"}
                builder.add_ingredient(ingredient, mime, io.BytesIO(parent))
            builder.sign(signer, mime, io.BytesIO(asset), output)
        return output.getvalue()


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """A PNG's chunks as (type, the whole chunk's bytes)."""
    found, position = [], 8
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        found.append((png[position + 4 : position + 8], png[position : position + 12 + length]))
        position += 12 + length
    return found


def retouched_png(signed: bytes) -> bytes:
    """A signed PNG whose pixels changed after signing, every other chunk (the manifest's
    caBX among them) kept: its image data replaced by that of an altered copy."""
    image = np.asarray(Image.open(io.BytesIO(signed)).convert("RGB")).copy()
    image[:16, :16] = 255 - image[:16, :16]
    fresh = b"".join(raw for kind, raw in chunks(png_bytes(image)) if kind == b"IDAT")
    out, replaced = signed[:8], False
    for kind, raw in chunks(signed):
        if kind != b"IDAT":
            out += raw
        elif not replaced:
            out, replaced = out + fresh, True
    return out


# -- invisible-watermark's dwtDct encoder ----------------------------------------------------------


def haar_bands(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``pywt.dwt2(plane, "haar")`` as (approximation, horizontal, vertical, diagonal), in
    pywt's order of operations: the encoder writes into the approximation band and rebuilds the
    image from all four."""
    a, b, c, d = plane[0::2, 0::2], plane[0::2, 1::2], plane[1::2, 0::2], plane[1::2, 1::2]
    low_left, low_right = a * HAAR + c * HAAR, b * HAAR + d * HAAR
    high_left, high_right = a * HAAR - c * HAAR, b * HAAR - d * HAAR
    return (
        low_left * HAAR + low_right * HAAR,
        high_left * HAAR + high_right * HAAR,
        low_left * HAAR - low_right * HAAR,
        high_left * HAAR - high_right * HAAR,
    )


def embed_dwtdct(rgb: np.ndarray, bits: np.ndarray, scale: float = 36.0) -> np.ndarray:
    """invisible-watermark 0.2.0's ``EmbedMaxDct.encode`` (its default scales [0, 36, 36], block
    4), ported to numpy for the tests: the package needs opencv-python. Fed the image as the
    reference pipelines feed it (BGR), it writes the same pixels, to the bit (checked against
    the package where it is installed). Its quirks are kept: the inverse DWT gets the detail
    bands H and V swapped, and the float result is cast into the uint8 YUV image."""
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV)
    rows, cols = (yuv.shape[0] // 4) * 4, (yuv.shape[1] // 4) * 4
    u = yuv[:rows, :cols, 1].astype(np.float64)
    approx, horizontal, vertical, diagonal = haar_bands(u)
    block_rows, block_cols = approx.shape[0] // 4, approx.shape[1] // 4
    number = 0
    for i in range(block_rows):
        for j in range(block_cols):
            block = approx[i * 4 : i * 4 + 4, j * 4 : j * 4 + 4]
            flat = block.flatten()
            peak = int(np.argmax(np.abs(flat[1:]))) + 1
            value = flat[peak]
            bit = int(bits[number % len(bits)])
            magnitude = (abs(value) // scale + 0.25 + 0.5 * bit) * scale
            block[peak // 4, peak % 4] = magnitude if value >= 0 else -magnitude
            number += 1
    # pywt.idwt2((approx, (vertical, horizontal, diagonal)), "haar"), H and V swapped as the
    # package passes them, in pywt's order of operations
    s, h, v = HAAR, vertical, horizontal
    left_low, right_low = approx * s + v * s, approx * s - v * s
    left_high, right_high = h * s + diagonal * s, h * s - diagonal * s
    out = np.empty_like(u)
    out[0::2, 0::2], out[1::2, 0::2] = left_low * s + left_high * s, left_low * s - left_high * s
    out[0::2, 1::2] = right_low * s + right_high * s
    out[1::2, 1::2] = right_low * s - right_high * s
    yuv[:rows, :cols, 1] = out
    return np.ascontiguousarray(cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR)[:, :, ::-1])


NOVELAI_TEXTS = {  # a NovelAI PNG's text chunks, as its stealth info carries them
    "Title": "NovelAI generated image",
    "Description": "portrait of a woman, detailed face",
    "Software": "NovelAI",
    "Source": "Stable Diffusion XL C1E1DE52",
    "Generation time": "5.5",
    "Comment": json.dumps(
        {"prompt": "portrait of a woman", "steps": 28, "sampler": "k_euler_ancestral",
         "seed": 1234, "scale": 5.0, "uc": "lowres"}
    ),
}  # fmt: skip


def stealth_png(rgb: np.ndarray, payload: bytes, signature: bytes, compress: bool = True) -> bytes:
    """A PNG whose pixels' low bits hide ``payload`` as the stealth-pnginfo writers hide it: the
    signature, a 32-bit count of the payload's bits, the payload (gzip for ``...comp``), column
    by column, in alpha (``stealth_png...``, an RGBA image) or in red, green and blue."""
    if signature.endswith(b"comp") and compress:
        payload = gzip.compress(payload)
    message = signature + struct.pack(">I", len(payload) * 8) + payload
    bits = np.unpackbits(np.frombuffer(message, dtype=np.uint8))
    in_alpha = signature.startswith(b"stealth_png")
    pixels = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]) if in_alpha else rgb.copy()
    planes = pixels[..., 3:4] if in_alpha else pixels[..., :3]
    columns = planes.transpose(1, 0, 2).reshape(-1).copy()  # column by column
    columns[: len(bits)] = (columns[: len(bits)] & 0xFE) | bits
    planes[...] = columns.reshape(planes.shape[1], planes.shape[0], -1).transpose(1, 0, 2)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()
