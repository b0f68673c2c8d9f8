"""Every ```python block of the README runs as written, as scikit-learn and NumPy test their
documentation.

The blocks run in the README's order in one namespace (a later block may use what an earlier one
made, as a reader would), in a temporary working directory. A block is skipped only when an
optional dependency it imports is missing ("needs torch"); a later block that uses a name the
skipped block would have assigned is skipped with it (names it imports excepted). A block whose first line is
``# fragment: needs <what>`` is compiled (its syntax checked) but not run.
"""
import ast
import importlib.util
import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
FRAGMENT = re.compile(r"#\s*fragment:\s*needs\b", re.IGNORECASE)
# What the extras install, by the module a block imports: a missing one skips the block.
OPTIONAL = {"torch", "keras", "tensorflow", "sklearn", "dask", "distributed", "onnx",
            "onnxruntime", "pandas", "joblib", "zarr", "matplotlib", "openvino"}
# cgru's submodules that import a framework
CGRU_NEEDS = {"cgru.sklearn": "sklearn", "cgru.dask": "dask", "cgru.torch": "torch"}


def python_blocks(text):
    """(line number, source) of every ```python block."""
    blocks, lines = [], text.splitlines()
    start = None
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if start is None and stripped == "```python":
            start, body = number + 1, []
        elif start is not None and stripped == "```":
            blocks.append((start, "\n".join(body) + "\n"))
            start = None
        elif start is not None:
            body.append(line)
    return blocks


BLOCKS = python_blocks(open(README, encoding="utf-8").read())


def _imported(tree):
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _missing_dependency(tree):
    for name in sorted(_imported(tree)):
        needed = CGRU_NEEDS.get(name) or name.split(".")[0]
        if needed in OPTIONAL and importlib.util.find_spec(needed) is None:
            return needed
    return None


def _assigned(tree, imports=True):
    """The names a block binds; imports=False leaves out the modules it imports (a skipped
    block's `import numpy as np` would have bound what an earlier block bound already)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif imports and isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def _used(tree):
    return {node.id for node in ast.walk(tree)
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """The namespace the blocks share, the names skipped blocks would have made (name ->
    reason), and a working directory of their own."""
    folder = tmp_path_factory.mktemp("readme")
    previous = os.getcwd()
    os.chdir(folder)
    saved_backend = os.environ.get("KERAS_BACKEND")
    try:
        yield {"namespace": {"__name__": "__readme__"}, "skipped": {}}
    finally:
        os.chdir(previous)
        if saved_backend is None:
            os.environ.pop("KERAS_BACKEND", None)
        else:
            os.environ["KERAS_BACKEND"] = saved_backend


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("line,source", BLOCKS, ids=[f"line{line}" for line, _ in BLOCKS])
def test_readme_block(readme_run, line, source):
    code = compile(source, f"README.md:{line}", "exec")     # a syntax error fails every block
    first = source.lstrip().splitlines()[0] if source.strip() else ""
    if FRAGMENT.match(first):
        return                          # a fragment by its own word: compiled, not run
    tree = ast.parse(source)
    skipped = readme_run["skipped"]
    missing = _missing_dependency(tree)
    if missing is None:
        earlier = sorted((_used(tree) - _assigned(tree)) & set(skipped))
        if earlier:
            missing = skipped[earlier[0]]
    if missing is not None:
        skipped.update(dict.fromkeys(_assigned(tree, imports=False), missing))
        pytest.skip(f"needs {missing}")
    try:
        exec(code, readme_run["namespace"])
    except ModuleNotFoundError as error:   # imported indirectly (keras's backend, say)
        root = (error.name or "").split(".")[0]
        if root not in OPTIONAL:
            raise
        skipped.update(dict.fromkeys(_assigned(tree, imports=False), root))
        pytest.skip(f"needs {root}")
    for name in _assigned(tree):
        skipped.pop(name, None)         # made again by this block: usable by later ones


def test_fragments_are_recognised():
    assert FRAGMENT.match("# fragment: needs a trained model")
    assert not FRAGMENT.match("import cgru")


def test_a_block_importing_a_missing_package_is_skipped_naming_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real(name, *a))
    assert _missing_dependency(ast.parse("import torch\nimport numpy")) == "torch"
    assert _missing_dependency(ast.parse("from cgru.torch import x")) == "torch"
    assert _missing_dependency(ast.parse("import numpy")) is None
