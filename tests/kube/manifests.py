"""Hypothesis strategies for FogDeployment manifests: valid ones, and valid ones broken on purpose.

A `Case` is a manifest, the field a break touched (as the API server names it in its errors,
e.g. `spec.resources.cpuCores` or `spec.env[3].value`) and whether the CRD must refuse it. The
valid manifests reach every limit of crds/fogdeployment.yaml (strings and lists at their
maximum, unicode everywhere free text is allowed); the breaks are wrong types, numbers out of
range, strings too long or holding a NUL, missing required and unknown fields, lists and maps
too large, and names at and past the limits.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

API_VERSION = "fogcompute.io/v1alpha1"
# The CRD's limits, as written in crds/fogdeployment.yaml (the test is a check of that file, so
# the numbers are repeated here rather than read from it).
NAME_MAX = 100  # the product rule (CEL on the root)
K8S_NAME_MAX = 253  # what Kubernetes allows any custom resource
IMAGE_MAX = 500
TEXT_ITEM_MAX = 4096  # env values, command and args items
LIST_MAX = {"env": 64, "ports": 32, "command": 64, "args": 64}
SELECTOR_MAX = 32
LABEL_VALUE_MAX = 63
RANGES: dict[tuple[str, ...], tuple[float, float]] = {
    ("spec", "replicas"): (0, 100),
    ("spec", "resources", "cpuCores"): (0.5, 32),
    ("spec", "resources", "memoryMB"): (512, 65536),
    ("spec", "resources", "gpuUnits"): (0, 8),
    ("spec", "resources", "storageGB"): (1, 1000),
}
INTEGER_FIELDS = {path for path in RANGES if path[-1] != "cpuCores"}
REQUIRED = [
    ("spec",),
    ("spec", "image"),
    ("spec", "replicas"),
    ("spec", "resources"),
    ("spec", "resources", "cpuCores"),
    ("spec", "resources", "memoryMB"),
]
# The validation modes of a create: kubectl's default (Strict) refuses unknown fields by
# name; the server's own default (Warn) and Ignore prune them and accept the rest.
FIELD_VALIDATION = ("Strict", "Warn", "Ignore")
UNKNOWN_FIELD = "unknown field"

_names = itertools.count()


@dataclass(frozen=True)
class Case:
    """A manifest to create, and what the API server must make of it."""

    manifest: dict[str, Any]
    # Where the break is, as the API server's error names it: "" if none, "a|b" if either.
    field: str
    must_reject: bool
    what: str  # the break, for the failure message and hypothesis's statistics
    validation: str = "Strict"  # the create's fieldValidation
    kind: str = "valid"  # which break (the strategy's name), for the figures

    @property
    def name(self) -> str:
        """The object's name ("" when the break removed it)."""
        return str(self.manifest.get("metadata", {}).get("name", ""))


# --------------------------------------------------------------------------- valid manifests

# Free text as people write it: any character PostgreSQL text can hold (no NUL, no lone
# surrogates), control characters, right-to-left marks and emoji included.
free_char = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
free_text = st.text(free_char, max_size=20)


def long_text(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    """Text of min_size..max_size characters, cheaply: a drawn chunk repeated to length."""
    return st.builds(
        lambda chunk, size: (chunk * (size // len(chunk) + 1))[:size],
        st.text(free_char, min_size=1, max_size=8),
        st.integers(min_size, max_size),
    )


def text_up_to(limit: int, min_size: int = 0) -> st.SearchStrategy[str]:
    """Mostly short text, sometimes exactly at the limit or anywhere up to it."""
    return st.one_of(
        st.text(free_char, min_size=max(min_size, 0), max_size=min(20, limit)),
        long_text(max(min_size, 1), limit),
        long_text(limit, limit),
    )


dns_label = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?\Z")
label_name = st.from_regex(r"\A[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?\Z")
label_key = st.one_of(label_name, st.builds(lambda p, n: f"{p}.io/{n}", dns_label, label_name))
label_value = st.one_of(st.just(""), label_name, st.just("v" * LABEL_VALUE_MAX))
env_name = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,30}\Z")


def bounded_list(item: st.SearchStrategy[Any], limit: int) -> st.SearchStrategy[list[Any]]:
    """A list of up to 3 items, or exactly at the limit."""
    return st.one_of(st.lists(item, max_size=3), st.lists(item, min_size=limit, max_size=limit))


env = st.one_of(
    st.lists(env_name, max_size=3, unique=True),
    st.lists(env_name, min_size=LIST_MAX["env"], max_size=LIST_MAX["env"], unique=True),
).flatmap(
    lambda names: st.tuples(*[st.none() | text_up_to(TEXT_ITEM_MAX) for _ in names]).map(
        lambda values: [
            {"name": n} if v is None else {"name": n, "value": v}
            for n, v in zip(names, values, strict=True)
        ]
    )
)
ports = st.one_of(
    st.lists(st.integers(1, 65535), max_size=3, unique=True),
    st.lists(st.integers(1, 65535), min_size=32, max_size=32, unique=True),
).map(lambda numbers: [{"containerPort": n, "protocol": "TCP"} for n in numbers])


@st.composite
def valid_spec(draw: Callable[..., Any]) -> dict[str, Any]:
    """A spec the CRD must accept, any optional field present or not."""
    resources: dict[str, Any] = {
        "cpuCores": draw(st.sampled_from([0.5, 32]) | st.integers(1, 32) | st.floats(0.5, 32)),
        "memoryMB": draw(st.integers(512, 65536)),
    }
    if draw(st.booleans()):
        resources["gpuUnits"] = draw(st.integers(0, 8))
    if draw(st.booleans()):
        resources["storageGB"] = draw(st.integers(1, 1000))
    spec: dict[str, Any] = {
        "image": draw(text_up_to(IMAGE_MAX, min_size=1)),
        # Mostly few replicas (the nodes are small), sometimes up to the limit.
        "replicas": draw(st.integers(0, 3) | st.integers(0, 100)),
        "resources": resources,
    }
    optional: dict[str, st.SearchStrategy[Any]] = {
        "nodeSelector": st.dictionaries(label_key, label_value, max_size=3)
        | st.dictionaries(label_key, label_value, min_size=SELECTOR_MAX, max_size=SELECTOR_MAX),
        "placement": st.sampled_from(["Spread", "BinPack"]).map(lambda s: {"strategy": s}),
        "env": env,
        "ports": ports,
        "command": bounded_list(text_up_to(TEXT_ITEM_MAX), LIST_MAX["command"]),
        "args": bounded_list(text_up_to(TEXT_ITEM_MAX), LIST_MAX["args"]),
    }
    for key, strategy in optional.items():
        if draw(st.integers(0, 3)) == 0:  # each optional field in a quarter of the specs
            spec[key] = draw(strategy)
    return spec


def fresh_name(length: int | None = None) -> str:
    """A name no other example used (objects of all examples live side by side).

    With `length`, padded to exactly that many characters.
    """
    name = f"gen-{next(_names)}"
    return name if length is None else f"{name}-{'a' * length}"[:length]


@st.composite
def valid_case(draw: Callable[..., Any]) -> Case:
    manifest = {
        "apiVersion": API_VERSION,
        "kind": "FogDeployment",
        "metadata": {"name": fresh_name(draw(st.sampled_from([None, NAME_MAX])))},
        "spec": draw(valid_spec()),
    }
    return Case(manifest, field="", must_reject=False, what="valid")


# --------------------------------------------------------------------------- the breaks


def _path_text(path: tuple[str | int, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f"{'.' if text else ''}{part}"
    return text


def _set(manifest: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    parent: Any = manifest
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value


def _get(manifest: dict[str, Any], path: tuple[str | int, ...]) -> Any:
    value: Any = manifest
    for part in path:
        value = value[part]
    return value


JSON_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "string": free_text,
    "integer": st.integers(-(2**40), 2**40),
    "number": st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f != int(f)),
    "boolean": st.booleans(),
    "array": st.lists(st.integers(0, 9), max_size=2),
    "object": st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 9), max_size=2),
    "null": st.none(),
}
TYPES: dict[tuple[str, ...], str] = {
    ("spec",): "object",
    ("spec", "image"): "string",
    ("spec", "replicas"): "integer",
    ("spec", "resources"): "object",
    ("spec", "resources", "cpuCores"): "number",
    ("spec", "resources", "memoryMB"): "integer",
    ("spec", "resources", "gpuUnits"): "integer",
    ("spec", "resources", "storageGB"): "integer",
    ("spec", "nodeSelector"): "object",
    ("spec", "placement"): "object",
    ("spec", "env"): "array",
    ("spec", "ports"): "array",
    ("spec", "command"): "array",
    ("spec", "args"): "array",
}
# Which JSON types each schema type also takes: an integer is a number.
ALSO_ACCEPTED = {"number": {"integer"}}


@st.composite
def wrong_type(draw: Callable[..., Any], manifest: dict[str, Any]) -> tuple[str, bool, str]:
    path = draw(st.sampled_from(sorted(TYPES)))
    expected = TYPES[path]
    other = draw(
        st.sampled_from(sorted(set(JSON_VALUES) - {expected} - ALSO_ACCEPTED.get(expected, set())))
    )
    _ensure_parent(manifest, path)
    _set(manifest, path, draw(JSON_VALUES[other]))
    # A null is dropped by the API server before validation: refused only where required.
    must_reject = other != "null" or path in REQUIRED
    return _path_text(path), must_reject, f"{_path_text(path)} as {other}"


def _ensure_parent(manifest: dict[str, Any], path: tuple[str, ...]) -> None:
    """Make the objects above an optional field exist (for spec.placement.strategy and such)."""
    parent: Any = manifest
    for part in path[:-1]:
        parent = parent.setdefault(part, {})


@st.composite
def out_of_range(draw: Callable[..., Any], manifest: dict[str, Any]) -> tuple[str, bool, str]:
    path = draw(st.sampled_from(sorted(RANGES)))
    low, high = RANGES[path]
    if path in INTEGER_FIELDS:
        value: float = draw(
            st.integers(max_value=int(low) - 1)
            | st.integers(min_value=int(high) + 1)
            | st.sampled_from([int(low) - 1, int(high) + 1, 2**31, 2**63 - 1, -(2**63)])
        )
    else:
        value = draw(
            st.floats(max_value=low, exclude_max=True, allow_nan=False, allow_infinity=False)
            | st.floats(min_value=high, exclude_min=True, allow_nan=False, allow_infinity=False)
        )
    _ensure_parent(manifest, path)
    _set(manifest, path, value)
    return _path_text(path), True, f"{_path_text(path)} out of range"


def _text_fields(manifest: dict[str, Any]) -> list[tuple[tuple[str | int, ...], int]]:
    """Every free-text field of the manifest with its maxLength (one is always the image)."""
    spec = manifest["spec"]
    fields: list[tuple[tuple[str | int, ...], int]] = [(("spec", "image"), IMAGE_MAX)]
    for index, item in enumerate(spec.get("env", [])):
        if "value" in item:
            fields.append((("spec", "env", index, "value"), TEXT_ITEM_MAX))
    for key in ("command", "args"):
        fields += [(("spec", key, index), TEXT_ITEM_MAX) for index in range(len(spec.get(key, [])))]
    return fields


@st.composite
def too_long(draw: Callable[..., Any], manifest: dict[str, Any]) -> tuple[str, bool, str]:
    path, limit = draw(st.sampled_from(_text_fields(manifest)))
    # Past the limit by one, or a lot (100 KiB: far past any field, well inside a request).
    _set(manifest, path, draw(long_text(limit + 1, limit + 1) | long_text(limit + 2, 100_000)))
    return _path_text(path), True, f"{_path_text(path)} too long"


@st.composite
def with_nul(draw: Callable[..., Any], manifest: dict[str, Any]) -> tuple[str, bool, str]:
    """A NUL character in free text: JSON carries it, PostgreSQL text and JSONB cannot."""
    path, _ = draw(st.sampled_from(_text_fields(manifest)))
    _set(manifest, path, f"{draw(free_text)}\x00{draw(free_text)}")
    return _path_text(path), True, f"{_path_text(path)} with NUL"


@st.composite
def missing(draw: Callable[..., Any], manifest: dict[str, Any]) -> tuple[str, bool, str]:
    path = draw(st.sampled_from(REQUIRED))
    del _get(manifest, path[:-1])[path[-1]]
    return _path_text(path), True, f"{_path_text(path)} missing"


@st.composite
def unknown(draw: Callable[..., Any], manifest: dict[str, Any]) -> tuple[str, bool, str]:
    """An undeclared field: Strict validation refuses it by name, the others prune it."""
    spec = manifest["spec"]
    places: list[tuple[str | int, ...]] = [(), ("spec",), ("spec", "resources")]
    places += [("spec", "env", i) for i in range(len(spec.get("env", [])))]
    places += [("spec", "ports", i) for i in range(len(spec.get("ports", [])))]
    if "placement" in spec:
        places.append(("spec", "placement"))
    place = draw(st.sampled_from(places))
    key = draw(st.sampled_from(["replicaCount", "cpu", "extra", "valueFrom", "x"]))
    target = _get(manifest, place)
    if key in target:
        key = f"{key}X"
    target[key] = draw(JSON_VALUES["string"] | JSON_VALUES["integer"])
    # Refused by name under Strict validation only (see `case`).
    return _path_text((*place, key)), True, UNKNOWN_FIELD


@st.composite
def oversized(draw: Callable[..., Any], manifest: dict[str, Any]) -> tuple[str, bool, str]:
    key = draw(st.sampled_from(["env", "ports", "command", "args", "nodeSelector"]))
    limit = SELECTOR_MAX if key == "nodeSelector" else LIST_MAX[key]
    size = draw(st.integers(limit + 1, limit * 3))
    if key == "env":
        value: Any = [{"name": f"V{i}", "value": "x"} for i in range(size)]
    elif key == "ports":
        value = [{"containerPort": i + 1} for i in range(size)]
    elif key == "nodeSelector":
        value = {f"k{i}": "v" for i in range(size)}
    else:
        value = ["x"] * size
    manifest["spec"][key] = value
    return f"spec.{key}", True, f"spec.{key} oversized"


@st.composite
def bad_item(draw: Callable[..., Any], manifest: dict[str, Any]) -> tuple[str, bool, str]:
    """A list item or map entry that breaks its own rule: duplicates, patterns, ranges."""
    spec = manifest["spec"]
    kind = draw(st.sampled_from(["env name", "duplicate env", "port", "duplicate port", "label"]))
    if kind == "env name":
        name = draw(st.sampled_from(["", "1ABC", "A-B", "é", "A B"]) | long_text(129, 300))
        spec["env"] = [{"name": name, "value": "x"}]
        return "spec.env[0].name", True, kind
    if kind == "duplicate env":
        spec["env"] = [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]
        return "spec.env[1]", True, kind
    if kind == "port":
        number = draw(st.integers(max_value=0) | st.integers(min_value=65536))
        spec["ports"] = [{"containerPort": number}]
        return "spec.ports[0].containerPort", True, kind
    if kind == "duplicate port":
        spec["ports"] = [{"containerPort": 80}, {"containerPort": 80, "protocol": "TCP"}]
        return "spec.ports", True, kind
    key, value = draw(
        st.sampled_from([("-bad", "v"), ("a/b/c", "v"), ("k" * 64, "v"), ("zone", "-x")])
        | st.tuples(st.just("zone"), long_text(LABEL_VALUE_MAX + 1, 200))
    )
    spec["nodeSelector"] = {key: value}
    return "spec.nodeSelector", True, "label"


@st.composite
def bad_name(draw: Callable[..., Any], manifest: dict[str, Any]) -> tuple[str, bool, str]:
    """Names at the product's limit (accepted), past it or past Kubernetes' own (refused)."""
    unique = fresh_name()

    def padded(length: int) -> str:
        return fresh_name(length)

    name, valid = draw(
        st.sampled_from(
            [
                (padded(NAME_MAX), True),
                (padded(NAME_MAX + 1), False),  # the product's rule (CEL)
                (padded(K8S_NAME_MAX), False),
                (padded(K8S_NAME_MAX + 1), False),  # Kubernetes' own
                (f"{unique}.dotted", False),  # a valid DNS subdomain, but not ours
                (f"{unique}-Upper", False),
                (f"{unique}_under", False),
                (f"{unique}-\u00e9", False),
                (f"{unique}-", False),
                ("", False),
            ]
        )
    )
    if name and draw(st.booleans()):
        # generateName: the server keeps 58 characters of the prefix and appends 5, so a prefix
        # of lowercase letters, digits and '-' makes a valid name, if the prefix itself is a
        # valid one (at most 253 characters). Either field may be named in the refusal.
        manifest["metadata"] = {"generateName": name}
        allowed = all(c.isdigit() or "a" <= c <= "z" or c == "-" for c in name)
        valid = allowed and name[0].isalnum() and len(name) <= K8S_NAME_MAX
        return "metadata.name|metadata.generateName", not valid, "generateName"
    manifest["metadata"]["name"] = name
    return "metadata.name", not valid, "name"


BREAKS = [
    wrong_type,
    out_of_range,
    too_long,
    with_nul,
    missing,
    unknown,
    oversized,
    bad_item,
    bad_name,
]


@st.composite
def case(draw: Callable[..., Any]) -> Case:
    """A valid manifest (about one case in ten) or one broken in one way."""
    valid = draw(valid_case())
    # Hypothesis leans towards the first choices: valid (None) third gives it about a tenth.
    breaker = draw(st.sampled_from([*BREAKS[:2], None, *BREAKS[2:]]))
    if breaker is None:
        return valid
    manifest = copy.deepcopy(valid.manifest)
    field, must_reject, what = draw(breaker(manifest))
    validation = draw(st.sampled_from(FIELD_VALIDATION))
    if what == UNKNOWN_FIELD:
        must_reject = validation == "Strict"
        what = f"{what} ({validation})"
    return Case(manifest, field, must_reject, what, validation, breaker.__name__)
