#!/usr/bin/env bash
# Scan the example inputs and print one line per face: path, frame (videos), label, p(fake).
#
#   examples/pipeline.sh [FOLDER_OR_FILES...]      (default: this folder)
#
# mfclip writes JSON Lines to stdout (--jsonl -): a "meta" line, then one "file" line per input
# with its faces; p(fake) = 1 - p(real). Files without a face print their status instead.
# Uses jq when it is installed, else Python. Set MFCLIP to run another command, e.g.
# MFCLIP="python -m mfclip_cli" examples/pipeline.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[ "$#" -gt 0 ] || set -- "$here"
read -r -a mfclip <<<"${MFCLIP:-mfclip}"

if command -v jq >/dev/null 2>&1; then
  "${mfclip[@]}" scan "$@" --jsonl - --quiet | jq -r '
    select(.type == "file")
    | .path as $path
    | if (.faces | length) == 0 then "\($path)\t-\t\(.status)\t-"
      else .faces[] | "\($path)\t\(.frame // "-")\t\(.label)\t\((1 - .probs.real) * 1000 | round / 1000)"
      end'
else
  "${mfclip[@]}" scan "$@" --jsonl - --quiet | python3 -c '
import json, sys
for line in sys.stdin:
    record = json.loads(line)
    if record.get("type") != "file":
        continue
    if not record["faces"]:
        print(record["path"], "-", record["status"], "-", sep="\t")
    for face in record["faces"]:
        frame = face.get("frame")
        print(record["path"], "-" if frame is None else frame, face["label"], round(1 - face["probs"]["real"], 3), sep="\t")
'
fi
