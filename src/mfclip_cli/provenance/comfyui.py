"""ComfyUI's API-format graph read on its own: the PNG ``prompt`` text without the ``workflow``
text beside it, which is what an image made through ComfyUI's HTTP API carries (a service, a
bot or a script that POSTs to ``/prompt`` sends no editor graph, so ComfyUI's SaveImage writes
none). sd-parsers needs the editor graph's typed links to walk the graph and refuses such a
file; this reader walks the API graph's own links.

The graph is a JSON object of node id -> ``{"class_type": ..., "inputs": {...}}``; an input is a
literal or a link ``[source node id, output index]`` (ComfyUI's own test for a link: a list of
two, a string and a number). The text is untrusted: every walk below is iterative and visits a
node at most once, so a cycle of links, a chain of any depth or a graph of any size costs time
in proportion to its size, never a recursion or a loop; whatever is not shaped as a node or a
link is passed over.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any, Callable, Iterable, Iterator, NamedTuple

from mfclip_cli.provenance.record import Generation

TOOL = "ComfyUI"  # as sd-parsers names it for a file with both graphs
# a prompt text past this is not parsed: ComfyUI's graphs are tens of kilobytes, and Pillow lets
# a PNG hold 64 MB of text, which json would make several times that in objects
MAX_PROMPT_CHARS = 8 << 20
# ComfyUI's samplers (its core nodes and comfy_extras' custom sampling); other nodes count as one
# by sd-parsers' rule, inputs ``sampler_name``, ``steps`` and ``cfg`` (custom KSampler variants)
SAMPLERS = frozenset({"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced"})
SAMPLER_INPUTS = frozenset({"sampler_name", "steps", "cfg"})
# the sampler input that holds (or links to) each field: KSampler's ``seed``, KSamplerAdvanced's
# and SamplerCustom's ``noise_seed``, SamplerCustomAdvanced's ``noise`` (a RandomNoise node);
# KSamplerSelect's ``sampler_name`` behind SamplerCustom's ``sampler``
SEED_INPUTS = ("seed", "noise_seed")
NOISE_INPUT = "noise"
SEED_SOURCES = ("seed", "noise_seed", "value")  # ``value``: ComfyUI's Primitive* nodes
SAMPLER_NAME_INPUTS = ("sampler_name", "sampler")
SAMPLER_NAME_SOURCES = ("sampler_name", "value")
# the loaders' file names (CheckpointLoaderSimple and the other checkpoint loaders' ``ckpt_name``,
# UNETLoader's ``unet_name``), reached from a sampler through ``model`` links (past LoRA loaders
# and model patches) or a SamplerCustomAdvanced's ``guider``
MODEL_NAMES = ("ckpt_name", "unet_name")
MODEL_LINKS = ("model", "guider")
# the positive conditioning: a sampler's or CFGGuider's ``positive``, BasicGuider's
# ``conditioning``, DualCFGGuider's ``cond1``, followed through nodes that take ``conditioning*``
# (FluxGuidance, ConditioningCombine, ...) or ``positive`` (ControlNetApplyAdvanced); never
# ``negative``, nor ``clip`` (that leads to the loader, not to a text)
PROMPT_LINKS = ("positive", "guider", "cond1")
PROMPT_TEXTS = ("text", "text_g", "text_l", "clip_l", "clip_g", "t5xxl")
TEXT_SOURCES = ("text", "value", "string")  # a text linked from a primitive or string node


class Node(NamedTuple):
    class_type: str
    inputs: dict[str, Any]


Graph = dict[str, Node]  # node id -> node, for the entries shaped as nodes


def read_api_prompt(text: str | None) -> Generation | None:
    """The generation a ComfyUI ``prompt`` text (its API-format graph) describes, or None where
    the text is no such graph (not JSON, not an object, no node in it): the model, seed and
    sampler of the first sampler (``first_sampler``) and the positive prompt that reaches it.
    A field the graph does not say, or says only through a link that leads nowhere, is None."""
    graph = _graph(text)
    if graph is None:
        return None
    sampler = first_sampler(graph)
    if sampler is None:
        return Generation(tool=TOOL, model=_least_model(graph))
    inputs = graph[sampler].inputs
    return Generation(
        tool=TOOL,
        model=_model(graph, sampler) or _least_model(graph),
        seed=_seed(graph, inputs),
        sampler=scalar(
            _follow(graph, _first_input(inputs, SAMPLER_NAME_INPUTS), SAMPLER_NAME_SOURCES)
        ),
        prompt=_prompt(graph, sampler),
    )


def first_sampler(graph: Graph) -> str | None:
    """The sampler the generation starts from, chosen by the graph's structure alone: one that no
    other sampler's output reaches (SDXL's base, not the refiner that takes its latent), the
    least node id among several (numeric ids by number). Not the order of the JSON object (a
    client writes it in any order) nor of a set (whose order follows Python's hash seed), so the
    same file names the same model and seed in every run."""
    samplers = [node_id for node_id, node in graph.items() if _is_sampler(node)]
    if not samplers:
        return None
    consumers: dict[str, list[str]] = {}
    for node_id, node in graph.items():
        for value in node.inputs.values():
            source = _link(value, graph)
            if source is not None:
                consumers.setdefault(source, []).append(node_id)
    after_a_sampler: set[str] = set()
    stack = [node_id for sampler in samplers for node_id in consumers.get(sampler, ())]
    while stack:
        node_id = stack.pop()
        if node_id not in after_a_sampler:
            after_a_sampler.add(node_id)
            stack.extend(consumers.get(node_id, ()))
    # samplers that all feed each other (a cycle, which ComfyUI would refuse to run) leave none
    # first: the least id of all is taken then
    first = [sampler for sampler in samplers if sampler not in after_a_sampler] or samplers
    return min(first, key=_id_order)


def scalar(value: Any) -> str | None:
    """A field's value as text, or None where the front end left a link in the graph (ComfyUI's
    ``["12", 0]``: the value comes from another node; sd-parsers passes such links on as they
    are) or anything else that is no value (an object, null)."""
    return str(value) if isinstance(value, (str, int, float)) else None


def _graph(text: str | None) -> Graph | None:
    """The nodes of an API-format graph, by id: the entries shaped ``{"class_type": str,
    "inputs": {...}}``; None where there is none. JSON too deep for the parser, or a number
    too long to convert, is no graph, as is a text over ``MAX_PROMPT_CHARS``."""
    if not text or len(text) > MAX_PROMPT_CHARS:
        return None
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    graph = {
        node_id: Node(node["class_type"], node["inputs"])
        for node_id, node in document.items()
        if isinstance(node, dict)
        and isinstance(node.get("class_type"), str)
        and isinstance(node.get("inputs"), dict)
    }
    return graph or None


def _is_sampler(node: Node) -> bool:
    return node.class_type in SAMPLERS or SAMPLER_INPUTS <= node.inputs.keys()


def _id_order(node_id: str) -> tuple[int, int, str, str]:
    """Numeric ids by number ("9" before "10"; compared as text of the same length, so that a
    thousand-digit id costs no int conversion), then any other id by its text."""
    if node_id.isascii() and node_id.isdigit():
        digits = node_id.lstrip("0")
        return (0, len(digits), digits, node_id)
    return (1, 0, node_id, node_id)


def _link(value: Any, graph: Graph) -> str | None:
    """The node a link points to, or None for a literal or a link to no node of the graph."""
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], (int, float))
        and value[0] in graph
    ):
        return value[0]
    return None


def _first_input(inputs: dict[str, Any], names: Iterable[str]) -> Any:
    return next((inputs[name] for name in names if name in inputs), None)


def _follow(graph: Graph, value: Any, names: Iterable[str]) -> Any:
    """The literal behind ``value``: itself, or where it is a link, the first of ``names`` in the
    linked node's inputs, followed again (a seed from RandomNoise or a primitive node, a sampler
    name from KSamplerSelect). A link back to a node already passed ends it with None."""
    names, seen = tuple(names), set()
    while (source := _link(value, graph)) is not None:
        if source in seen:
            return None
        seen.add(source)
        value = _first_input(graph[source].inputs, names)
    return value


def _seed(graph: Graph, inputs: dict[str, Any]) -> str | None:
    """A sampler's seed; SamplerCustomAdvanced's ``noise`` is taken only as a link (to
    RandomNoise): a literal ``noise`` on some other sampler is a strength, not a seed."""
    value = _first_input(inputs, SEED_INPUTS)
    if value is None and _link(inputs.get(NOISE_INPUT), graph) is not None:
        value = inputs[NOISE_INPUT]
    return scalar(_follow(graph, value, SEED_SOURCES))


def _model(graph: Graph, sampler: str) -> str | None:
    """The first loader reached from ``sampler`` through model links, breadth first: its file
    name, or None where it names it through a link that leads nowhere."""
    for node in _walk(graph, sampler, lambda name: name in MODEL_LINKS):
        found = _first_input(node.inputs, MODEL_NAMES)
        if found is not None:
            return scalar(_follow(graph, found, MODEL_NAMES + ("value",)))
    return None


def _least_model(graph: Graph) -> str | None:
    """Where no sampler leads to a loader: the least loader file name in the graph, as the
    ComfyUI path through sd-parsers falls back to (least, not first, for the same reason)."""
    names = (scalar(_first_input(node.inputs, MODEL_NAMES)) for node in graph.values())
    return min(filter(None, names), default=None)


def _prompt(graph: Graph, sampler: str) -> str | None:
    """The texts of the prompt nodes the sampler's positive conditioning comes from, breadth
    first, each once, joined by ", " as sd-parsers joins a file's prompts. The walk stops at a
    node with a text input (CLIPTextEncode); one without (a conditioning combine or patch) is
    passed through."""
    texts: dict[str, None] = {}  # a set in the order found (a fan-in of many texts stays linear)
    for node in _walk(graph, sampler, _leads_to_positive, stop=_is_prompt_node):
        for name in filter(node.inputs.__contains__, PROMPT_TEXTS):
            text = _follow(graph, node.inputs[name], TEXT_SOURCES)
            if isinstance(text, str) and text.strip():
                texts[text.strip()] = None
    return ", ".join(texts) or None


def _leads_to_positive(name: str) -> bool:
    return name in PROMPT_LINKS or name.startswith("conditioning")


def _is_prompt_node(node: Node) -> bool:
    return any(name in node.inputs for name in PROMPT_TEXTS)


def _walk(
    graph: Graph,
    start: str,
    follows: Callable[[str], bool],
    stop: Callable[[Node], bool] | None = None,
) -> Iterator[Node]:
    """The nodes upstream of ``start`` (itself excluded), breadth first through the inputs whose
    names ``follows`` accepts, in sorted name order so that the walk is the graph's, not its
    JSON's; a node ``stop`` accepts is yielded and not walked past. Each node is visited once,
    so a cycle ends the walk and a graph of any size costs time in proportion to its size."""
    seen, queue = {start}, deque([start])
    while queue:
        inputs = graph[queue.popleft()].inputs
        for name in sorted(key for key in inputs if follows(key)):
            source = _link(inputs[name], graph)
            if source is None or source in seen:
                continue
            seen.add(source)
            yield graph[source]
            if stop is None or not stop(graph[source]):
                queue.append(source)
