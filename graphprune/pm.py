"""Pass manager: passes with contracts, a caching analysis manager, instruments and pipelines.

A pass is a small frozen dataclass with a kebab-case `name`, typed options as fields, a `contract`
and `run(graph, analyses) -> PassResult`. Passes rewrite the graph in place. After every pass the
structural verifier runs (always); the numerical verifier (by contract) runs when asked: in tests,
and behind `--verify` in the command.

With GRAPHPRUNE_STRICT=1 in the environment (the test suite sets it) every pipeline also runs the
numerical verifier and checks every claim that an analysis is preserved.

Pipelines are text: "fold-bn,dce" or "prune-channels{ratio=0.5},dce"; `Pipeline.parse` reads them
through the explicit registry in graphprune.passes.registry.
"""

from __future__ import annotations

import enum
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, NamedTuple, Protocol, TypeVar

import numpy as np

from .inputs import sample_inputs
from .ir.errors import GraphError, VerificationError
from .ir.graph import Graph


def strict_mode() -> bool:
    return os.environ.get("GRAPHPRUNE_STRICT") == "1"


class Contract(enum.Enum):
    EXACT = "exact"  # outputs equal the previous graph
    MASK_EQUIVALENT = "mask-equivalent"  # outputs equal the masked reference the pass returns
    APPROXIMATE = "approximate"  # error metrics recorded and checked against the pass's budget


class Analysis(Protocol):
    """An analysis computes a value from a graph. Results must compare with == (frozen dataclasses)."""

    name: ClassVar[str]

    @classmethod
    def compute(cls, graph: Graph, analyses: AnalysisManager) -> Any: ...


class _All:
    def __repr__(self) -> str:
        return "ALL"


ALL = _All()  # "every analysis is preserved"


@dataclass(frozen=True)
class PassResult:
    changed: bool
    # analyses still valid after the pass: ALL, or a frozenset of Analysis classes
    preserved: frozenset[type] | _All = frozenset()
    stats: dict[str, Any] = field(default_factory=dict)
    # MASK_EQUIVALENT passes return the masked reference their output must equal, as a function so
    # that it is built only when a verifier asks for it
    reference: Callable[[], Graph] | None = None
    # APPROXIMATE passes: the error of the outputs against the graph before the pass, as the pass
    # measured it on sample inputs (None when it did not measure), and the budget it declares
    error: Metrics | None = None
    budget: float | None = None

    @staticmethod
    def unchanged() -> PassResult:
        return PassResult(False, ALL)


class Pass(Protocol):
    name: ClassVar[str]
    contract: ClassVar[Contract]

    def run(self, graph: Graph, analyses: AnalysisManager) -> PassResult: ...


A = TypeVar("A")


class AnalysisManager:
    """Caches analysis results per class; drops what a pass does not declare preserved.

    With `check_preserved=True` (tests), every claim that an analysis is preserved is checked by
    recomputing it; a false claim raises VerificationError naming the pass and the analysis.
    """

    def __init__(self, graph: Graph, *, check_preserved: bool | None = None) -> None:
        self.graph = graph
        self.check_preserved = strict_mode() if check_preserved is None else check_preserved
        self._cache: dict[type, Any] = {}
        self.computed: dict[str, int] = {}  # how often each analysis ran (for tests and stats)

    def get(self, cls: type[A]) -> Any:
        if cls not in self._cache:
            self._cache[cls] = cls.compute(self.graph, self)  # type: ignore[attr-defined]
            key = getattr(cls, "name", cls.__name__)
            self.computed[key] = self.computed.get(key, 0) + 1
        return self._cache[cls]

    def cached(self, cls: type) -> bool:
        return cls in self._cache

    def after_pass(self, pass_name: str, result: PassResult) -> None:
        if result.preserved is ALL:
            kept = set(self._cache)
        else:
            kept = set(self._cache) & set(result.preserved)  # type: ignore[arg-type]
        if self.check_preserved:
            for cls in kept:
                fresh = cls.compute(self.graph, self)
                if fresh != self._cache[cls]:
                    raise VerificationError(
                        f"pass {pass_name!r} claims to preserve analysis {getattr(cls, 'name', cls.__name__)!r}, "
                        "but recomputing it gives a different result; drop it from the pass's preserved set"
                    )
        self._cache = {cls: self._cache[cls] for cls in kept}


# --------------------------------------------------------------------------------------------
# Instruments
# --------------------------------------------------------------------------------------------


class Instrument:
    """Hooks around every pass of a pipeline."""

    def before_pass(self, p: Pass, graph: Graph) -> None:
        pass

    def after_pass(self, p: Pass, graph: Graph, result: PassResult) -> None:
        pass


class StructuralVerifier(Instrument):
    """Always on: the graph must be well formed after every pass."""

    def after_pass(self, p: Pass, graph: Graph, result: PassResult) -> None:
        try:
            graph.verify()
        except GraphError as e:
            raise VerificationError(f"after pass {p.name!r}: {e}") from None


@dataclass
class Metrics:
    """Error of outputs against a reference: max |diff|, ||diff|| / ||ref||, cosine, and max |ref|."""

    max_abs: float
    rel_l2: float
    cosine: float
    scale: float

    def to_json(self) -> dict[str, float]:
        return {"max_abs": self.max_abs, "rel_l2": self.rel_l2, "cosine": self.cosine, "scale": self.scale}

    @staticmethod
    def measure(ref_graph: Graph, graph: Graph, *, seed: int = 0, bindings: dict[str, int] | None = None) -> Metrics:
        """Both graphs on the same sample inputs, in float64."""
        inputs = sample_inputs(ref_graph, seed=seed, bindings=bindings)
        ref = ref_graph.run(*inputs, dtype="float64")
        got = graph.run(*inputs, dtype="float64")
        if [r.shape for r in ref] != [g.shape for g in got]:
            raise VerificationError(f"output shapes changed: {[r.shape for r in ref]} -> {[g.shape for g in got]}")
        return Metrics.between(ref, got)

    @staticmethod
    def between(ref: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> Metrics:
        r = np.concatenate([np.asarray(a, np.float64).reshape(-1) for a in ref])
        g = np.concatenate([np.asarray(a, np.float64).reshape(-1) for a in got])
        if r.size == 0:
            return Metrics(0.0, 0.0, 1.0, 0.0)
        diff = r - g
        nr, ng = float(np.linalg.norm(r)), float(np.linalg.norm(g))
        cos = float(r @ g / (nr * ng)) if nr and ng else float(nr == ng)
        return Metrics(float(np.abs(diff).max()), float(np.linalg.norm(diff) / max(nr, 1e-300)), cos,
                       float(np.abs(r).max()))


def exact_tolerance(graph: Graph) -> float:
    """Relative tolerance for EXACT checks in float64. A pass that recomputes weights (BN folding)
    rounds them to their storage dtype, so the bound follows the widest float eps of the constants."""
    eps = max(
        (float(np.finfo(c.type.dtype.numpy).eps) for c in graph.constants if c.type.dtype.is_float),
        default=float(np.finfo(np.float64).eps),
    )
    return max(1e-10, 64 * eps)


class Record(NamedTuple):
    """One verified pass: its name, the error of its outputs, and its budget (APPROXIMATE passes)."""

    pass_name: str
    metrics: Metrics
    budget: float | None


class NumericalVerifier(Instrument):
    """Checks each pass's contract on sample inputs, computing in float64.

    EXACT: outputs equal the graph before the pass. MASK_EQUIVALENT: outputs equal the reference the
    pass returned (the original with pruned channels masked), to about 1e-10. APPROXIMATE: max-abs,
    relative L2 and cosine error against the graph before the pass are recorded in `self.records`
    with the budget the pass declares (its `budget` field: the largest relative L2 error it allows,
    required), and the relative L2 error must stay within it.
    """

    def __init__(self, *, seed: int = 0, bindings: dict[str, int] | None = None) -> None:
        self.seed = seed
        self.bindings = bindings
        self.records: list[Record] = []
        self._before: Graph | None = None

    def before_pass(self, p: Pass, graph: Graph) -> None:
        self._before = graph.copy() if p.contract is not Contract.MASK_EQUIVALENT else None

    def after_pass(self, p: Pass, graph: Graph, result: PassResult) -> None:
        if not result.changed:
            return
        if p.contract is Contract.MASK_EQUIVALENT:
            ref_graph = result.reference() if result.reference is not None else None
        else:
            ref_graph = self._before
        if ref_graph is None:
            raise VerificationError(f"pass {p.name!r} is MASK_EQUIVALENT but returned no masked reference")
        try:
            m = Metrics.measure(ref_graph, graph, seed=self.seed, bindings=self.bindings)
        except VerificationError as e:
            raise VerificationError(f"pass {p.name!r} changed the outputs: {e}") from None
        if p.contract is Contract.APPROXIMATE:
            budget = result.budget if result.budget is not None else getattr(p, "budget", None)
            if budget is None:
                raise VerificationError(f"pass {p.name!r} is APPROXIMATE but declares no error budget")
            self.records.append(Record(p.name, m, float(budget)))
            if m.rel_l2 > budget:
                raise VerificationError(
                    f"pass {p.name!r} exceeds its error budget: relative L2 error {m.rel_l2:.3g} > {budget:.3g} "
                    f"(max abs {m.max_abs:.3g}, cosine {m.cosine:.4f})"
                )
            return
        self.records.append(Record(p.name, m, None))
        tol = exact_tolerance(ref_graph) if p.contract is Contract.EXACT else 1e-10
        if m.max_abs > tol * max(1.0, m.scale):
            raise VerificationError(
                f"pass {p.name!r} broke its {p.contract.value} contract: max abs error {m.max_abs:.3g} "
                f"(output scale {m.scale:.3g}, allowed {tol:.1g} relative); this is a bug in the pass"
            )


class Timer(Instrument):
    def __init__(self) -> None:
        self.seconds: list[tuple[str, float]] = []
        self._t = 0.0

    def before_pass(self, p: Pass, graph: Graph) -> None:
        self._t = time.perf_counter()

    def after_pass(self, p: Pass, graph: Graph, result: PassResult) -> None:
        self.seconds.append((p.name, time.perf_counter() - self._t))


# --------------------------------------------------------------------------------------------
# Pipelines
# --------------------------------------------------------------------------------------------

_ITEM = re.compile(r"\s*([a-z][a-z0-9-]*)\s*(?:\{([^}]*)\})?\s*(?:,|$)")


def _option(p_cls: type, key: str, text: str, pipeline: str) -> Any:
    known = {f.name.replace("_", "-"): f for f in fields(p_cls)}
    if key not in known:
        raise ValueError(f"pass {p_cls.name!r} has no option {key!r}; it has {sorted(known) or 'none'}")
    ann = str(known[key].type)
    text = text.strip()
    try:
        if ann.startswith("bool"):
            if text not in ("true", "false"):
                raise ValueError
            return text == "true"
        if ann.startswith("int"):
            return int(text)
        if ann.startswith("float"):
            return float(text)
    except ValueError:
        raise ValueError(f"option {key}={text!r} of pass {p_cls.name!r} must be a {ann}") from None
    return text


@dataclass
class Pipeline:
    passes: list[Any]

    @staticmethod
    def parse(text: str) -> Pipeline:
        from graphprune.passes.registry import REGISTRY

        out: list[Any] = []
        pos = 0
        text = text.strip()
        while pos < len(text):
            m = _ITEM.match(text, pos)
            if m is None or m.end() == pos:
                raise ValueError(f"cannot read pipeline {text!r} at position {pos}; expected name or name{{k=v}}")
            name, opts = m.group(1), m.group(2)
            if name not in REGISTRY:
                raise ValueError(f"unknown pass {name!r} in pipeline {text!r}; known passes: {sorted(REGISTRY)}")
            cls = REGISTRY[name]
            kwargs: dict[str, Any] = {}
            for item in filter(None, (opts or "").split(",")):
                if "=" not in item:
                    raise ValueError(f"option {item!r} of pass {name!r} must look like key=value")
                k, v = item.split("=", 1)
                kwargs[k.strip().replace("-", "_")] = _option(cls, k.strip().replace("_", "-"), v, text)
            out.append(cls(**kwargs))
            pos = m.end()
        return Pipeline(out)

    def __str__(self) -> str:
        parts = []
        for p in self.passes:
            opts = ",".join(f"{f.name.replace('_', '-')}={_fmt(getattr(p, f.name))}" for f in fields(p))
            parts.append(p.name + (f"{{{opts}}}" if opts else ""))
        return ",".join(parts)

    def run(
        self,
        graph: Graph,
        *,
        verify: bool | None = None,
        instruments: Sequence[Instrument] = (),
        analyses: AnalysisManager | None = None,
    ) -> list[PassResult]:
        """Run the passes in order on `graph` (in place). `verify=True` adds the numerical verifier
        (default: on in strict mode only)."""
        verify = strict_mode() if verify is None else verify
        am = analyses or AnalysisManager(graph)
        inst: list[Instrument] = [StructuralVerifier(), *instruments]
        if verify and not any(isinstance(i, NumericalVerifier) for i in inst):
            inst.append(NumericalVerifier())
        results = []
        for p in self.passes:
            for i in inst:
                i.before_pass(p, graph)
            result = p.run(graph, am)
            am.after_pass(p.name, result)
            for i in inst:
                i.after_pass(p, graph, result)
            results.append(result)
        return results


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
