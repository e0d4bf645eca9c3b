"""Where scan results go: JSON, JSON Lines, CSV, a terminal table, annotated copies, the HTML
case report; one module per renderer, all over the same records (``records.py``).

Every sink gets the run's meta first, then one record per input file in input order. JSON Lines
and CSV are written as each file finishes (a crash loses nothing already written); the JSON
document is written atomically at the end. No sink overwrites an existing file unless asked.
"""
