"""Compilers and runners for the cpp backend, found at run time.

Each target names the compiler it needs, the flags, and how its executables run here. A missing tool
is a `ToolchainError` that names the Debian package (or PyPI package) to install; CI installs them all
(.ci/run).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from graphprune.ir.errors import GraphpruneError

TARGETS = ("host", "aarch64", "wasm32")
WASI_LIBCXX = Path("/usr/lib/llvm-16/include/wasm32-wasi/c++/v1")  # Debian's libc++-16-dev-wasm32
AARCH64_SYSROOT = Path("/usr/aarch64-linux-gnu")
APT_AARCH64 = "g++-aarch64-linux-gnu"
APT_WASM = "clang-16 lld-16 wasi-libc libc++-16-dev-wasm32 libc++abi-16-dev-wasm32 libclang-rt-16-dev-wasm32"


class ToolchainError(GraphpruneError):
    """A compiler or runner for the requested target is not installed (the message says which package)."""


class BuildError(GraphpruneError):
    """The C++ compiler rejected generated code or the runtime (the message carries its first lines)."""


@dataclass(frozen=True)
class Toolchain:
    target: str
    cxx: tuple[str, ...]  # the compiler command (argv prefix)
    cflags: tuple[str, ...]  # for every object
    ldflags: tuple[str, ...]  # for executables
    ar: tuple[str, ...] | None  # None: no static library (wasm32 links one module)
    shared: bool  # can build a shared library (host and aarch64)

    @property
    def key(self) -> str:
        """Identifies the compiler and flags in build caches."""
        version = _run_text([*self.cxx, "--version"]).splitlines()[0] if self.cxx else ""
        return hashlib.sha256(repr((self.target, self.cxx, self.cflags, self.ldflags, version)).encode()).hexdigest()

    def compile(self, src: Path, obj: Path, extra: Sequence[str] = ()) -> None:
        _check([*self.cxx, *self.cflags, *extra, "-c", str(src), "-o", str(obj)], f"compiling {src.name}")

    def link(self, objs: Sequence[Path], out: Path, extra: Sequence[str] = ()) -> None:
        _check([*self.cxx, *self.cflags, *map(str, objs), *self.ldflags, *extra, "-o", str(out)], f"linking {out.name}")


COMMON = ("-std=c++17", "-O2", "-ffp-contract=fast", "-fno-math-errno", "-fvisibility=hidden", "-Wall")


def find(target: str) -> Toolchain:
    """The toolchain for `target`, or a ToolchainError naming what to install."""
    if target not in TARGETS:
        raise ToolchainError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    zig = shutil.which("zig") or _pypi_zig()
    if target == "host":
        cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")
        if not cxx:
            raise ToolchainError("no host C++ compiler (g++ or clang++, or $CXX); install the Debian package g++")
        ar = shutil.which("ar") or shutil.which("gcc-ar")
        return Toolchain(
            "host", (cxx,), (*COMMON, "-march=native", "-fPIC", "-pthread"), ("-pthread",), (ar,) if ar else None, True
        )
    if target == "aarch64":
        gxx = shutil.which("aarch64-linux-gnu-g++")
        if gxx:
            ar = shutil.which("aarch64-linux-gnu-ar")
            return Toolchain(
                "aarch64",
                (gxx,),
                (*COMMON, "-march=armv8-a", "-fPIC", "-pthread"),
                ("-static", "-pthread"),
                (ar,) if ar else None,
                True,
            )
        if zig:
            return Toolchain(
                "aarch64", (zig, "c++", "-target", "aarch64-linux-gnu"), (*COMMON, "-fPIC"), (), (zig, "ar"), True
            )
        raise ToolchainError(
            f"no aarch64 cross compiler: install the Debian package {APT_AARCH64} (or PyPI ziglang for `zig c++`)"
        )
    clang = shutil.which("clang++-16") or shutil.which("clang-16")
    if clang and WASI_LIBCXX.is_dir() and _has_wasm_ld() and Path("/usr/lib/wasm32-wasi/libc.a").exists():
        cflags = (
            "--target=wasm32-wasi",
            "-msimd128",
            "-fno-exceptions",
            "-nostdinc++",
            "-isystem",
            str(WASI_LIBCXX),
            *COMMON,
        )
        ldflags = ("-Wl,-z,stack-size=1048576", "-Wl,--initial-memory=16777216", "-Wl,--max-memory=2147483648")
        return Toolchain("wasm32", (clang,), cflags, ldflags, None, False)
    if zig:
        return Toolchain(
            "wasm32", (zig, "c++", "-target", "wasm32-wasi"), ("-msimd128", "-fno-exceptions", *COMMON), (), None, False
        )
    raise ToolchainError(f"no wasm32 compiler: install the Debian packages {APT_WASM} (or PyPI ziglang)")


def _has_wasm_ld() -> bool:
    return bool(shutil.which("wasm-ld-16") or shutil.which("wasm-ld"))


def _pypi_zig() -> str | None:
    try:
        import ziglang  # type: ignore[import-not-found]
    except ImportError:
        return None
    exe = Path(ziglang.__file__).parent / "zig"
    return str(exe) if exe.exists() else None


def runner_prefix(target: str) -> list[str]:
    """The argv prefix that runs a target's executable on this machine."""
    if target == "host":
        return []
    if target == "aarch64":
        qemu = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
        if not qemu:
            raise ToolchainError("no qemu-aarch64 to run aarch64 builds: install the Debian package qemu-user")
        return [qemu, "-L", str(AARCH64_SYSROOT)]
    if target == "wasm32":
        node = shutil.which("node")
        if node:
            return [node, "--no-warnings"]  # runs the emitted JS loader, model.mjs
        wasmtime = shutil.which("wasmtime")
        if wasmtime:
            return [wasmtime, "run", "--dir=."]
        raise ToolchainError("no wasm runtime to run wasm32 builds: install node (Debian package nodejs) or wasmtime")
    raise ToolchainError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")


def _run_text(argv: Sequence[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout or ""
    except OSError:
        return ""


def _check(argv: Sequence[str], what: str) -> None:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise BuildError(f"{what} failed ({argv[0]} exit {proc.returncode}): " + " | ".join(lines[:8]))
