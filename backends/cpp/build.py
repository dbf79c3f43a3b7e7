"""Writes the output folder of the cpp backend and builds it.

The folder holds only fixed file names (no name from the model reaches the file system):
model.h, model.cpp, model_weights.cpp or model_weights.bin, runner.cpp, CMakeLists.txt, runtime/
(a copy of the gprt sources) and what the build makes: libmodel.a, libmodel.so and runner (host,
aarch64), or model.wasm with model.mjs, its node loader (wasm32).

Objects are cached by the hash of their source and the toolchain (in $GRAPHPRUNE_CACHE or
~/.cache/graphprune), so rebuilding the same model, or another model on the same runtime, compiles only
what changed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from graphprune.ir.errors import GraphpruneError

from .toolchain import Toolchain, _check


def runtime_dir() -> Path:
    """cpp/: inside the wheel (graphprune/backends/cpp/runtime) or at the repository root."""
    here = Path(__file__).resolve().parent
    for cand in (here / "runtime", here.parents[1] / "cpp"):
        if (cand / "include" / "gprt" / "gprt.h").is_file():
            return cand
    raise GraphpruneError(
        f"the gprt runtime sources are missing (looked in {here / 'runtime'} and {here.parents[1] / 'cpp'})"
    )


def runtime_files() -> dict[str, bytes]:
    """Relative path -> content of every runtime file copied into an output folder."""
    root = runtime_dir()
    files = {}
    for sub in ("include/gprt", "src", "tools"):
        for p in sorted((root / sub).iterdir()):
            if p.suffix in (".h", ".cpp"):
                files[f"{sub}/{p.name}"] = p.read_bytes()
    return files


def cache_dir() -> Path:
    base = Path(os.environ.get("GRAPHPRUNE_CACHE") or Path.home() / ".cache" / "graphprune")
    d = base / "cpp"
    d.mkdir(parents=True, exist_ok=True)
    return d


def write_files(out_dir: Path, files: dict[str, bytes]) -> None:
    """Write files under out_dir; every name is one of ours, and each lands strictly inside out_dir."""
    root = out_dir.resolve()
    for rel, data in files.items():
        dest = (root / rel).resolve()
        if root not in dest.parents:
            raise GraphpruneError(f"refusing to write {rel} outside {root}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_file() and dest.read_bytes() == data:
            continue  # unchanged: keep the timestamp
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dest)


def _cached_object(tc: Toolchain, src: Path, includes: Sequence[Path], flags: Sequence[str], deps: bytes) -> Path:
    key = hashlib.sha256(tc.key.encode() + repr(list(flags)).encode() + src.read_bytes() + deps).hexdigest()
    obj = cache_dir() / f"{key[:32]}.o"
    if not obj.exists():
        fd, tmp = tempfile.mkstemp(suffix=".o", dir=obj.parent)
        os.close(fd)
        try:
            tc.compile(src, Path(tmp), [*(f"-I{p}" for p in includes), *flags])
            os.replace(tmp, obj)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return obj


def build(out_dir: Path, tc: Toolchain, embedded: bool) -> None:
    """Compile and link everything the folder's target needs."""
    rt = out_dir / "runtime"
    headers = b"".join((rt / "include" / "gprt" / n).read_bytes() for n in sorted(os.listdir(rt / "include" / "gprt")))
    model_h = (out_dir / "model.h").read_bytes()
    inc = [rt / "include", out_dir]
    defines = ["-DGP_WEIGHTS_EMBEDDED"] if embedded else []
    # the runtime is compiled once per toolchain (cached), so it can afford -O3's loop vectorizer
    runtime_objs = [_cached_object(tc, p, inc, ["-O3"], headers) for p in sorted((rt / "src").glob("*.cpp"))]
    model_objs = [_cached_object(tc, out_dir / "model.cpp", inc, defines, headers + model_h)]
    if embedded:
        model_objs.append(_cached_object(tc, out_dir / "model_weights.cpp", inc, [], b""))
    runner_obj = _cached_object(tc, rt / "tools" / "runner.cpp", inc, [], model_h)
    objs = model_objs + runtime_objs
    if tc.target == "wasm32":
        tc.link([runner_obj, *objs], out_dir / "model.wasm")
        return
    if tc.ar:
        lib = out_dir / "libmodel.a"
        lib.unlink(missing_ok=True)
        _check([*tc.ar, "rcsD", str(lib), *map(str, objs)], "archiving libmodel.a")
    if tc.shared:
        _check(
            [*tc.cxx, *tc.cflags, "-shared", *map(str, objs), "-pthread", "-o", str(out_dir / "libmodel.so")],
            "linking libmodel.so",
        )
    tc.link([runner_obj, *objs], out_dir / "runner")


def run_checked(argv: Sequence[str], cwd: Path, what: str) -> str:
    proc = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise GraphpruneError(f"{what} failed (exit {proc.returncode}): " + " | ".join(msg[-6:]))
    return proc.stdout


def copy_for_load(lib: Path) -> Path:
    """A content-addressed copy of a shared library: the dynamic loader caches libraries by path, so a
    rebuilt libmodel.so at the same path would otherwise load the old code."""
    data = lib.read_bytes()
    dest = cache_dir() / f"lib{hashlib.sha256(data).hexdigest()[:32]}.so"
    if not dest.exists():
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=dest.parent)
        os.close(fd)
        shutil.copyfile(lib, tmp)
        os.replace(tmp, dest)
    return dest
