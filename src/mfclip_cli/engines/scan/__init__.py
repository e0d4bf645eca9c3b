"""`mfclip scan` and `mfclip report`: inputs, the scanner, per-file records, and the report
writers (table, JSON, JSON Lines, CSV, HTML) over the same records."""
