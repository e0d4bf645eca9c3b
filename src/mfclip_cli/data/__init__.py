"""The data layer: labelled samples, dataset layouts, manifests and evaluation protocols.

Light on purpose: nothing this package exports imports torch. The one module that does,
``faceset`` (the torch dataset of face crops the training and inference passes read), is
imported by name where it is needed.
"""

from mfclip_cli.data.combine import data_record, read_datasets
from mfclip_cli.data.layouts import LAYOUTS, detect_layout, locate, read_dataset
from mfclip_cli.data.layouts.labels import LabelTable
from mfclip_cli.data.protocols import (
    HOLDOUT_FIELDS,
    REPORT_FIELDS,
    Protocol,
    ProtocolError,
    SplitFilter,
    Splits,
    group_fraction,
    load_protocol,
    parse_protocol,
    recorded_protocol,
    resolve_holdout,
    select,
    shipped_protocol_names,
    shipped_protocols,
)
from mfclip_cli.data.samples import (
    IMAGE_EXTENSIONS,
    LABELS,
    SAMPLE_FIELDS,
    VIDEO_EXTENSIONS,
    DataError,
    DataIndex,
    DataSource,
    Sample,
    Unreadable,
    find_manifest,
    read_manifest,
    summarize,
    write_manifest,
)

__all__ = [
    "HOLDOUT_FIELDS",
    "IMAGE_EXTENSIONS",
    "LABELS",
    "LAYOUTS",
    "REPORT_FIELDS",
    "SAMPLE_FIELDS",
    "VIDEO_EXTENSIONS",
    "DataError",
    "DataIndex",
    "DataSource",
    "LabelTable",
    "Protocol",
    "ProtocolError",
    "Sample",
    "SplitFilter",
    "Splits",
    "Unreadable",
    "data_record",
    "detect_layout",
    "find_manifest",
    "group_fraction",
    "load_protocol",
    "locate",
    "parse_protocol",
    "recorded_protocol",
    "read_dataset",
    "read_datasets",
    "read_manifest",
    "resolve_holdout",
    "select",
    "shipped_protocol_names",
    "shipped_protocols",
    "summarize",
    "write_manifest",
]
