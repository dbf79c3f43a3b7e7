"""Dead-code elimination: drop nodes and constants that no graph output depends on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from graphprune.ir.graph import Graph
from graphprune.pm import AnalysisManager, Contract, PassResult


@dataclass(frozen=True)
class DeadCodeElimination:
    name: ClassVar[str] = "dce"
    contract: ClassVar[Contract] = Contract.EXACT

    def run(self, graph: Graph, analyses: AnalysisManager) -> PassResult:
        live = {id(v) for v in graph.outputs}
        dead = []
        # one backward sweep in topological order: a node is live iff one of its outputs is read
        for node in reversed(graph.nodes):
            if any(id(o) in live for o in node.outputs):
                live.update(id(v) for v in node.inputs)
            else:
                dead.append(node)
        for node in dead:  # consumers come before producers in `dead`, so each erase is legal
            graph.erase(node)
        unused = [c for c in graph.constants if not c.uses and c not in graph.outputs]
        for c in unused:
            graph.remove_const(c)
        changed = bool(dead or unused)
        stats = {"nodes_removed": len(dead), "constants_removed": len(unused)}
        return PassResult(changed, frozenset(), stats) if changed else PassResult.unchanged()
