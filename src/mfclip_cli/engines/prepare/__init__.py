"""`mfclip prepare`: a labelled dataset's faces detected and aligned once, with scan's pipeline.
``request.py`` holds what was asked and the checks made before torch loads; ``run.py`` the
work."""
