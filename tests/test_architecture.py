"""The package's layers (docs/architecture.md): imports run downward only, and no import circle
exists among cgru's modules, counting the imports made inside functions."""
import ast
import os
import subprocess
import sys

import pytest

import cgru

PACKAGE = os.path.dirname(os.path.abspath(cgru.__file__))
# subprocesses start here, not in the checkout, where ./cgru (uncompiled) would shadow the package
HERE = os.path.dirname(os.path.abspath(__file__))

# Layer of each module, lowest first; a module may import its own layer or any below it.
# Compiled extensions (cgru._gru_*, _cpu, _rows, _pool) sit below everything, for the engine alone.
LAYERS = {
    "leaf": ["cgru._version", "cgru._npz"],
    "engine": ["cgru._engine"],
    "modules": ["cgru._nn", "cgru.packing", "cgru.gru", "cgru.cell", "cgru.quantized"],
    "services": ["cgru.persist", "cgru.optim", "cgru.clip"],
    "interop": ["cgru._interop"],
    "faces": ["cgru", "cgru.__main__", "cgru.sklearn", "cgru._sequences", "cgru.dask",
              "cgru.cli", "cgru._demo", "cgru.bench", "cgru._bench_peers", "cgru.torch"],
}
ORDER = list(LAYERS)
COMPILED = ("cgru._cpu", "cgru._rows", "cgru._pool", "cgru._gru_")
# Façade methods that reach up a layer, lazily, each for a reason its comment gives:
# GRU.from_torch/to_torch/from_keras/from_onnx/to_onnx and GRUCell's: interop builds modules.
UPWARD = {("cgru.gru", "cgru._interop.torch"), ("cgru.gru", "cgru._interop.keras"),
          ("cgru.gru", "cgru._interop.onnx"), ("cgru.cell", "cgru._interop.torch")}


def _modules():
    """{module name: path} of every Python file of the package."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(module, path):
    """The cgru modules `module` imports, anywhere in the file (functions included)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # `from . import x` imports the module x when x is one
            names = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in MODULES
                     else origin for alias in node.names]
        else:
            continue
        found.update(name for name in names if name == "cgru" or name.startswith("cgru."))
    found.discard(module)
    return found


def _layer(module):
    for layer in reversed(ORDER):
        for prefix in LAYERS[layer]:
            if module == prefix or module.startswith(prefix + "."):
                return ORDER.index(layer)
    return None


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def test_every_module_has_a_layer():
    assert [m for m in MODULES if _layer(m) is None] == []


def test_imports_run_downward():
    upward = []
    for module, imported in GRAPH.items():
        for target in imported:
            if target.startswith(COMPILED):
                if not module.startswith("cgru._engine"):
                    upward.append((module, target))
                continue
            if _layer(target) > _layer(module) and (module, target) not in UPWARD:
                upward.append((module, target))
    assert upward == []


def test_no_import_circle():
    # packages import what their __init__ names; a module importing "cgru" itself reaches up
    def edges(module):
        return {t for t in GRAPH.get(module, ()) if t in GRAPH and t != "cgru"}

    state, circles = {}, []

    def visit(module, stack):
        state[module] = "open"
        for target in sorted(edges(module)):
            if state.get(target) == "open":
                circles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_only_the_engine_touches_the_kernel():
    for module, imported in GRAPH.items():
        if not module.startswith("cgru._engine"):
            assert not any(t.startswith(COMPILED) for t in imported), module


@pytest.mark.parametrize("module", ["cgru.optim", "cgru.clip", "cgru.packing", "cgru.persist"])
def test_import_cgru_gives_public_submodules(module):
    code = f"import cgru; m = cgru.{module.split('.', 1)[1]}; print(m.__name__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=HERE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == module


def test_import_cgru_imports_no_optional_framework():
    code = ("import cgru, sys; print(sorted(m for m in ('torch', 'sklearn', 'dask', 'keras', "
            "'onnx', 'onnxruntime', 'openvino', 'matplotlib', 'threadpoolctl', 'cgru.bench') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=HERE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_optim_works_after_import_cgru_alone():
    import numpy as np
    code = ("import cgru, numpy as np; gru = cgru.GRU(2, 3, seed=0); "
            "opt = cgru.optim.Adam(gru, lr=0.1); (o, h), back = gru.vjp(np.ones((4, 1, 2), "
            "np.float32)); before = gru.weight_hh_l0.copy(); opt.step(back(np.ones_like(o))); "
            "print(float(abs(gru.weight_hh_l0 - before).max()))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=HERE)
    assert result.returncode == 0, result.stderr
    assert np.isclose(float(result.stdout), 0.1, rtol=1e-3)
