"""Safe loading: no code in gpvcli/ can run what a file it reads smuggles in (pickles, YAML tags, eval)."""

import ast
from pathlib import Path

import pytest

import gpvcli

PACKAGE = Path(gpvcli.__file__).parent
# Modules whose loaders unpickle or unmarshal (run code); importing them at all is refused.
UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve", "marshal"}
UNSAFE_CALLS = {"builtins.eval", "builtins.exec", "yaml.load", "yaml.load_all", "yaml.unsafe_load",
                "yaml.unsafe_load_all", "yaml.full_load", "yaml.full_load_all", "pandas.read_pickle"}
UNSAFE_YAML_LOADERS = {"yaml.Loader", "yaml.UnsafeLoader", "yaml.FullLoader"}
TORCH_LOADS = {"torch.load", "torch.serialization.load"}
NUMPY_LOADS = {"numpy.load"}


def _names(tree: ast.AST) -> dict[str, str]:
    """Local name -> full dotted name, from the imports of a module (`np` -> numpy, `load` -> torch.load)."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                names[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _dotted(node: ast.AST, names: dict[str, str]) -> str | None:
    """The full dotted name of a Name/Attribute chain (`np.load` -> numpy.load, `eval` -> builtins.eval)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    head = names.get(node.id, f"builtins.{node.id}" if node.id in ("eval", "exec") else node.id)
    return ".".join([head, *reversed(parts)])


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _is_false(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


def findings(source: str, filename: str = "<source>") -> list[str]:
    """`file:line: problem` for every unsafe import or load call in `source`."""
    tree = ast.parse(source, filename)
    names = _names(tree)
    out = []
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            out += [f"{where}: imports {m}" for m in modules if m.split(".")[0] in UNSAFE_MODULES]
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, names)
        keywords = {k.arg: k.value for k in node.keywords}
        if name in UNSAFE_CALLS:
            out.append(f"{where}: calls {name}")
        elif name in TORCH_LOADS and not _is_true(keywords.get("weights_only")):
            out.append(f"{where}: {name} without weights_only=True")
        elif name in NUMPY_LOADS and not _is_false(keywords.get("allow_pickle", ast.Constant(False))):
            out.append(f"{where}: {name} with allow_pickle")
        loader = keywords.get("Loader")
        if loader is not None and _dotted(loader, names) in UNSAFE_YAML_LOADERS:
            out.append(f"{where}: an unsafe YAML Loader")
    return out


@pytest.mark.parametrize("source", [
    "import pickle\npickle.loads(b'')",
    "from pickle import load",
    "import dill",
    "import torch\ntorch.load('x.pt')",
    "import torch\ntorch.load('x.pt', weights_only=False)",
    "from torch import load as tl\ntl('x.pt')",
    "import yaml\nyaml.load(text)",
    "import yaml\nyaml.unsafe_load(text)",
    "import yaml\nyaml.safe_load(text, Loader=yaml.UnsafeLoader)",
    "import numpy as np\nnp.load('x.npy', allow_pickle=True)",
    "eval(text)",
    "exec(code)",
])
def test_the_scan_finds_unsafe_loading(source):
    assert findings(source)


def test_the_scan_passes_safe_loading():
    assert findings("import torch, yaml, numpy as np\n"
                    "torch.load('x.pt', map_location='cpu', weights_only=True)\n"
                    "yaml.safe_load(text)\nyaml.safe_dump(data)\n"
                    "np.load('x.npz')\nnp.load('x.npy', allow_pickle=False)\n"
                    "model.eval()\nself.eval()\n") == []


def test_the_package_loads_nothing_unsafely():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    problems = [p for f in files
                for p in findings(f.read_text(encoding="utf-8"), str(f.relative_to(PACKAGE.parent)))]
    assert problems == []
