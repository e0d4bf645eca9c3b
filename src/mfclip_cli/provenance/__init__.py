"""Provenance evidence beside the model's opinion: C2PA Content Credentials, plain generator
metadata and invisible watermarks (see docs/provenance.md). Importing this package loads none of
the libraries behind the checks; each is imported when its check first runs."""

from mfclip_cli.provenance.inspect import ProvenanceOptions, TrustError, inspect, inspect_video
from mfclip_cli.provenance.record import ProvenanceRecord

__all__ = ["ProvenanceOptions", "ProvenanceRecord", "TrustError", "inspect", "inspect_video"]
