"""mfclip: multi-modal fine-grained CLIP (MFCLIP) for synthetic-face forensics."""

__version__ = "0.1.0"
