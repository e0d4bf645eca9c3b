"""A scan under torchrun: each process scans its share of the inputs, rank 0 merges the records
back into input order."""

from __future__ import annotations

import contextlib
import heapq
import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import torch.distributed as dist

from mfclip_cli.engines.scan.inputs import InputItem
from mfclip_cli.engines.scan.records import (
    FileRecord,
)
from mfclip_cli.engines.scan.scanner import Scanner


def distributed_records(
    scanner: Scanner,
    items: list[InputItem],
    skip: Callable[[FileRecord], bool] | None,
    rank: int,
    world: int,
    parts_base: Path,
) -> Iterator[FileRecord]:
    """Rank r scans inputs r, r + N, ...; rank 0 then merges every rank's records in input order.

    Each rank streams its records to a part file next to the report, so memory stays flat; the
    merge is a k-way merge of files already sorted by input position.
    """
    folder: list[str | None] = [
        tempfile.mkdtemp(prefix=".mfclip-scan-parts-", dir=parts_base) if rank == 0 else None
    ]
    dist.broadcast_object_list(folder, src=0)
    parts = Path(folder[0])  # type: ignore[arg-type]
    mine = {item.display: index for index, item in enumerate(items) if index % world == rank}
    with open(parts / f"rank{rank:05d}.jsonl", "w", encoding="utf-8") as handle:
        for record in scanner.scan([items[index] for index in mine.values()], skip=skip):
            line = {"input": mine[record.path], "resumed": record.resumed, **record.to_dict()}
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")
    dist.barrier()
    if rank != 0:
        return
    try:
        with contextlib.ExitStack() as stack:
            streams = [
                stack.enter_context(open(path, encoding="utf-8"))
                for path in sorted(parts.glob("rank*.jsonl"))
            ]
            for document in heapq.merge(
                *(map(json.loads, stream) for stream in streams), key=lambda d: d["input"]
            ):
                record = FileRecord.from_dict(document)
                record.resumed = document["resumed"]
                yield record
    finally:
        shutil.rmtree(parts, ignore_errors=True)
