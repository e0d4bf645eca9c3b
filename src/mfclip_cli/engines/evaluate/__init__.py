"""`mfclip eval` and `mfclip calibrate`: a checkpoint scored on a protocol's splits."""
