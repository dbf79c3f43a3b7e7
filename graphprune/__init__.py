"""graphprune: compiler-style graph transformations that make neural networks smaller and faster.

    import graphprune as gp
    graph = gp.trace(module, example_inputs)     # or gp.load("model.onnx")
    outs = graph.run(*arrays)                      # the reference interpreter
    graph = gp.optimize(graph, "fold-bn,dce", verify=True)
    groups = gp.coupling_groups(graph)             # channels that must be pruned together
    graph = gp.prune(graph, channels=0.5, criterion="l2", scope="global", round_to=8)
    graph = gp.sparsify(graph, pattern="2:4", permute=True)   # N:M, block:RxC or unstructured
    gp.save(graph, "out.onnx")
    art = gp.compile(graph, backend="cpp", target="host", out_dir="build/")  # C++ library + runner
"""

from .api import (
    compile,
    cost,
    coupling_groups,
    load,
    optimize,
    parse,
    prune,
    prune_with_report,
    save,
    sparsify,
    sparsify_with_report,
    trace,
)
from .ir import (
    DType,
    ExportError,
    Graph,
    GraphError,
    GraphpruneError,
    ModelLoadError,
    Op,
    ParseError,
    ShapeError,
    TensorType,
    VerificationError,
)
from .pm import Contract, Pipeline

__version__ = "0.1.0"

__all__ = [
    "Contract",
    "compile",
    "DType",
    "ExportError",
    "Graph",
    "GraphError",
    "GraphpruneError",
    "ModelLoadError",
    "Op",
    "ParseError",
    "Pipeline",
    "ShapeError",
    "TensorType",
    "VerificationError",
    "cost",
    "coupling_groups",
    "load",
    "optimize",
    "parse",
    "prune",
    "prune_with_report",
    "save",
    "sparsify",
    "sparsify_with_report",
    "trace",
]
