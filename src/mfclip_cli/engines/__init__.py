"""Engines: the jobs (scan, and later train / eval) built on the model core and the face
pipeline."""
