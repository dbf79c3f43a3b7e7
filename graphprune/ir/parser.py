"""Reads the text form written by printer.print_graph back into a Graph.

Elided constants (`elided<digest>`) get their arrays from `weights` (by name) when given, checked
against the digest; otherwise they keep only their digest and type, and running the graph says so.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from typing import Any

import numpy as np

from .errors import ParseError
from .graph import Graph, Value
from .ops import SPECS, NoAttrs, Op
from .sparsity import Sparsity, mask_digest, mask_from_data, parse_pattern, unpack_bits
from .types import Dim, DType, TensorType

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r]+|\#[^\n]*)
  | (?P<nl>\n)
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<name>%(?:[A-Za-z0-9_.]+|"(?:[^"\\]|\\.)*"))
  | (?P<num>-?(?:\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|\.\d+(?:[eE][-+]?\d+)?|\d+))
  | (?P<ident>-?[A-Za-z_][A-Za-z0-9_]*)
  | (?P<paren>\([A-Za-z0-9_+*/-]+\))
  | (?P<punct>[@(){}\[\],:=<>])
    """,
    re.VERBOSE,
)

_OPS = {op.value: op for op in Op}
_DTYPES = {d.value: d for d in DType}


class _Lexer:
    def __init__(self, text: str) -> None:
        self.toks: list[tuple[str, str, int, int]] = []
        line, col, pos = 1, 1, 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise ParseError(f"line {line}, column {col}: unexpected character {text[pos]!r}")
            kind = m.lastgroup or ""
            if kind == "nl":
                line, col = line + 1, 1
            else:
                if kind != "ws":
                    self.toks.append((kind, m.group(), line, col))
                col += len(m.group())
            pos = m.end()
        self.end = ("eof", "", line, col)
        self.i = 0

    def peek(self) -> tuple[str, str, int, int]:
        return self.toks[self.i] if self.i < len(self.toks) else self.end

    def next(self) -> tuple[str, str, int, int]:
        tok = self.peek()
        self.i += 1
        return tok

    def error(self, what: str) -> ParseError:
        kind, text, line, col = self.peek()
        found = "end of input" if kind == "eof" else repr(text)
        return ParseError(f"line {line}, column {col}: expected {what}, found {found}")

    def expect(self, text: str) -> None:
        if self.peek()[1] != text:
            raise self.error(repr(text))
        self.i += 1

    def accept(self, text: str) -> bool:
        if self.peek()[1] == text:
            self.i += 1
            return True
        return False

    def kind(self, kind: str, what: str) -> str:
        if self.peek()[0] != kind:
            raise self.error(what)
        return self.next()[1]


def _name(lx: _Lexer) -> str:
    tok = lx.kind("name", "a value name like %x")[1:]
    return json.loads(tok) if tok.startswith('"') else tok


def _type(lx: _Lexer) -> TensorType:
    dt = lx.kind("ident", "a dtype such as f32")
    if dt not in _DTYPES:
        raise ParseError(f"unknown dtype {dt!r}; expected one of {sorted(_DTYPES)}")
    lx.expect("[")
    dims: list[Dim] = []
    while not lx.accept("]"):
        kind, text, _, _ = lx.next()
        if kind == "num" and text.lstrip("-").isdigit():
            dims.append(int(text))
        elif kind in ("ident", "paren"):
            dims.append(text)
        else:
            lx.i -= 1
            raise lx.error("a dimension (integer or symbol)")
        if not lx.accept(","):
            lx.expect("]")
            break
    ch = None
    kind, text, _, _ = lx.peek()
    if kind == "ident" and re.fullmatch(r"c\d+", text):
        lx.next()
        ch = int(text[1:])
    return TensorType(_DTYPES[dt], tuple(dims), ch)


def _value(lx: _Lexer) -> Any:
    kind, text, _, _ = lx.next()
    if kind == "num":
        return float(text) if any(c in text for c in ".eE") else int(text)
    if kind == "str":
        return json.loads(text)
    if kind == "ident":
        special = {"true": True, "false": False, "none": None, "inf": float("inf"), "-inf": float("-inf")}
        if text in special:
            return special[text]
        if text == "nan":
            return float("nan")
        return text
    if text == "[":
        items = []
        while not lx.accept("]"):
            items.append(_value(lx))
            if not lx.accept(","):
                lx.expect("]")
                break
        return items
    lx.i -= 1
    raise lx.error("an attribute value")


def _coerce(annotation: str, value: Any, where: str) -> Any:
    """Turn a generic parsed value into the attribute field's declared type."""
    hint = annotation.replace(" ", "")
    try:
        if value is None and "None" in hint:
            return None
        if hint.startswith("tuple[int"):
            return tuple(int(v) for v in value)
        if hint.startswith("tuple[float"):
            return tuple(float(v) for v in value)
        if hint.startswith("float"):
            return float(value)
        if hint == "bool":
            if not isinstance(value, bool):
                raise TypeError
            return value
        if hint.startswith("int"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError
            return value
        if hint == "DType":
            return _DTYPES[value]
        if hint == "str":
            if not isinstance(value, str):
                raise TypeError
            return value
    except (TypeError, ValueError, KeyError):
        pass
    raise ParseError(f"{where}: value {value!r} does not fit type {annotation}")


def _attrs(lx: _Lexer, op: Op, where: str) -> Any:
    cls = SPECS[op].attrs
    given: dict[str, Any] = {}
    if lx.accept("{"):
        while not lx.accept("}"):
            key = lx.kind("ident", "an attribute name")
            lx.expect("=")
            given[key] = _value(lx)
            if not lx.accept(","):
                lx.expect("}")
                break
    if cls is NoAttrs:
        if given:
            raise ParseError(f"{where}: op {op.value} takes no attributes, got {sorted(given)}")
        return NoAttrs()
    known = {f.name: str(f.type) for f in fields(cls)}  # annotations are strings (postponed evaluation)
    unknown = set(given) - set(known)
    if unknown:
        raise ParseError(f"{where}: op {op.value} has no attributes {sorted(unknown)}; it has {list(known)}")
    kwargs = {}
    for key, val in given.items():
        kwargs[key] = _coerce(known[key], val, f"{where}, attribute {key}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ParseError(f"{where}: attributes of {op.value} are incomplete: {e}") from None


def _data(lx: _Lexer, t: TensorType, where: str) -> np.ndarray | str:
    kind = lx.kind("ident", "dense<...> or elided<digest>")
    lx.expect("<")
    if kind == "elided":
        digest = ""  # hex digits lex as numbers and identifiers: join the raw tokens
        while not lx.accept(">"):
            kind, text, _, _ = lx.next()
            if kind not in ("num", "ident"):
                lx.i -= 1
                raise lx.error("a hex digest")
            digest += text
        return digest
    if kind != "dense":
        raise ParseError(f"{where}: expected dense<...> or elided<...>, found {kind}")
    vals = _value(lx)
    lx.expect(">")
    flat = vals if isinstance(vals, list) else [vals]
    shape = tuple(int(d) for d in t.shape)
    try:
        arr = np.array(flat, dtype=t.dtype.numpy).reshape(shape)
    except ValueError:
        raise ParseError(f"{where}: {len(flat)} values do not fill shape {shape}") from None
    return arr


def _sparsity(lx: _Lexer, where: str) -> tuple[str, int, int, str]:
    """sparsity<"2:4", axis=1, out=0, mask="bits:..."> -> (pattern, axis, out axis, mask text)."""
    lx.expect("<")
    pattern = json.loads(lx.kind("str", "the quoted sparsity pattern"))
    got: dict[str, Any] = {}
    for key in ("axis", "out", "mask"):
        lx.expect(",")
        lx.expect(key)
        lx.expect("=")
        got[key] = _value(lx)
    lx.expect(">")
    if not (isinstance(got["axis"], int) and isinstance(got["out"], int) and isinstance(got["mask"], str)):
        raise ParseError(f"{where}: sparsity needs integer axis and out and a quoted mask, got {got}")
    return pattern, got["axis"], got["out"], got["mask"]


def _attach(graph: Graph, v: Value, record: tuple[str, int, int, str], weights: dict[str, np.ndarray] | None,
            where: str) -> None:
    """Attach a parsed sparsity record. An elided mask comes from weights["<name>.mask"], or is
    recovered from the weight's zeros and checked against its digest."""
    pattern, axis, out_axis, mask_text = record
    try:
        p = parse_pattern(pattern)
    except ValueError as e:
        raise ParseError(f"{where}: {e}") from None
    kind, _, payload = mask_text.partition(":")
    shape = tuple(int(d) for d in v.type.shape)
    mask: np.ndarray | None = None
    digest = None
    if kind == "bits":
        try:
            mask = unpack_bits(payload, shape)
        except ValueError as e:
            raise ParseError(f"{where}: sparsity mask of %{v.name}: {e}") from None
    elif kind == "elided":
        digest = payload
        given = None if weights is None else weights.get(f"{v.name}.mask")
        if given is not None:
            mask = np.asarray(given, bool)
        elif v.has_data:
            mask = mask_from_data(p, np.asarray(v.data), axis, out_axis)
        if mask is not None and mask_digest(mask) != digest:
            raise ParseError(
                f"{where}: the sparsity mask of %{v.name} does not match digest {digest}; pass the mask as "
                f"weights[{v.name + '.mask'!r}]"
            )
    else:
        raise ParseError(f"{where}: a sparsity mask is \"bits:<hex>\" or \"elided:<digest>\", got {mask_text!r}")
    rec = Sparsity(str(p), axis, out_axis, mask, None if mask is not None else digest)
    found = rec.problems(np.asarray(v.data) if v.has_data else None, v.name)
    if found:
        raise ParseError(f"{where}: " + "; ".join(found))
    v.sparsity = rec


def parse_graph(text: str, weights: dict[str, np.ndarray] | None = None) -> Graph:
    lx = _Lexer(text)
    lx.expect("graph")
    lx.expect("@")
    graph = Graph(json.loads(lx.kind("str", "the graph name in quotes")))
    env: dict[str, Value] = {}

    def define(v: Value) -> None:
        env[v.name] = v

    def use(name: str) -> Value:
        if name not in env:
            raise lx.error(f"a defined value (%{name} is used before it is defined)")
        return env[name]

    lx.expect("(")
    while not lx.accept(")"):
        name = _name(lx)
        lx.expect(":")
        define(graph.add_input(name, _type(lx)))
        if not lx.accept(","):
            lx.expect(")")
            break
    lx.expect("{")
    while True:
        if lx.accept("return"):
            outs = [use(_name(lx))]
            while lx.accept(","):
                outs.append(use(_name(lx)))
            graph.set_outputs(outs)
            lx.expect("}")
            break
        line = lx.peek()[2]
        names = [_name(lx)]
        while lx.accept(","):
            names.append(_name(lx))
        lx.expect("=")
        where = f"line {line}"
        if lx.accept("const"):
            t = _type(lx)
            data = _data(lx, t, where)
            source = None
            if lx.accept("source"):
                lx.expect("=")
                source = json.loads(lx.kind("str", "a quoted source name"))
            record = _sparsity(lx, where) if lx.accept("sparsity") else None
            if isinstance(data, str):
                arr = None if weights is None else weights.get(names[0])
                v = graph.add_const(names[0], type=t, digest=data, source=source)
                if arr is not None:
                    graph.replace_const_data(v, np.asarray(arr, dtype=t.dtype.numpy))
                    if v.digest() != data:
                        raise ParseError(f"{where}: the array given for %{names[0]} does not match digest {data}")
                    v.type = t
            else:
                v = graph.add_const(names[0], data, source=source)
                v.type = t
            if record is not None:
                _attach(graph, v, record, weights, where)
            define(v)
            continue
        opname = lx.kind("ident", "an op name")
        if opname not in _OPS:
            raise ParseError(f"{where}: unknown op {opname!r}")
        op = _OPS[opname]
        lx.expect("(")
        ins: list[Value] = []
        while not lx.accept(")"):
            ins.append(use(_name(lx)))
            if not lx.accept(","):
                lx.expect(")")
                break
        attrs = _attrs(lx, op, where)
        lx.expect(":")
        out_types = [_type(lx)]
        while lx.accept(","):
            out_types.append(_type(lx))
        loc = ""
        if lx.accept("loc"):
            lx.expect("(")
            loc = json.loads(lx.kind("str", "a quoted location"))
            lx.expect(")")
        if len(out_types) != len(names):
            raise ParseError(f"{where}: {len(names)} results but {len(out_types)} types")
        node = graph.add_node(op, ins, attrs, types=out_types, name=loc, output_names=names)
        for o in node.outputs:
            define(o)
    if lx.peek()[0] != "eof":
        raise lx.error("end of input after the graph's closing brace")
    return graph
