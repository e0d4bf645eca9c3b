"""Engines: the jobs mfclip runs, one sub-package or module each, over the model core (``model``),
the face pipeline (``faces``), the data layer (``data``) and the shared numerics (``scoring``).

- ``scan/``: ``mfclip scan`` and ``mfclip report`` (inputs, records, report writers, HTML);
- ``evaluate/``: ``mfclip eval`` and ``mfclip calibrate``;
- ``train/``: ``mfclip train`` and ``mfclip ablate``;
- ``prepare/``: ``mfclip prepare`` (``request.py``: its checks, before torch loads);
  ``inspect.py``: ``mfclip data inspect`` (and prepare's
  ``--dry-run``); ``bench.py``: ``mfclip bench``;
- ``weights/``: the weights registry and store (``mfclip weights ...``) and downloads;
- ``inference.py``: a detector's passes over a dataset's samples, for eval, calibrate, train and
  ablate; ``fitting.py``: what those fit into a checkpoint (OOD, attribution, int8);
- ``runtime.py``: devices, exit codes, torchrun, shared by every job.
"""
