"""Imports go one way: helpers -> model -> checkpoint -> domain modules -> batches -> scripts.
No project import inside a function, no import circle, and every module imports on its own."""

import ast
import glob
import os
import subprocess
import sys

from conftest import ROOT

# the layer of each top-level module: a module imports only modules of a lower layer
LAYERS = {
    'utils': 0,
    'configurator': 1,
    'shards': 1,
    'model': 2,
    'checkpoint': 3,
    'mlm': 4,
    'mtp': 4,
    'chat': 4,
    'pretrained': 4,
    'diffusion': 4,
    'pathstar': 5,
    'tasks': 5,
    'batches': 6,
    'train': 7,
    'sample': 7,
    'export': 7,
}


def project_files():
    files = glob.glob(os.path.join(ROOT, '*.py')) + glob.glob(os.path.join(ROOT, 'bench', '*.py'))
    files += glob.glob(os.path.join(ROOT, 'data', '*', 'prepare.py'))
    return sorted(files)


def imported_modules(node):
    if isinstance(node, ast.Import):
        return [a.name.split('.')[0] for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module.split('.')[0]]
    return []


def test_every_top_level_module_has_a_layer():
    names = {os.path.basename(f)[:-3] for f in glob.glob(os.path.join(ROOT, '*.py'))}
    assert names == set(LAYERS), "add new modules to LAYERS (and so decide where they sit)"


def test_no_project_import_inside_a_function():
    project = set(LAYERS) | {'prepare', 'throughput', 'train'}
    bad = []
    for path in project_files():
        tree = ast.parse(open(path).read(), path)
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    bad += [
                        f"{os.path.relpath(path, ROOT)}:{node.lineno} imports {m}"
                        for m in imported_modules(node)
                        if m in project
                    ]
    assert not bad, bad


def test_imports_follow_the_layers_and_have_no_circle():
    graph = {}
    for name in LAYERS:
        tree = ast.parse(open(os.path.join(ROOT, name + '.py')).read())
        graph[name] = {m for node in tree.body for m in imported_modules(node) if m in LAYERS}
    upward = [f"{a} -> {b}" for a, deps in graph.items() for b in deps if LAYERS[b] >= LAYERS[a]]
    assert not upward, upward  # strictly downward edges cannot form a circle
    assert graph['batches'] >= {'pathstar', 'diffusion', 'mlm', 'chat'}  # the parse saw them


def test_every_module_imports_on_its_own():
    """Each module in a fresh interpreter state (project modules unloaded in between): an
    import order that only works after another module was loaded fails here."""
    code = (
        "import importlib, sys\nnames = sys.argv[1:]\nfor n in names:\n"
        "    for m in names: sys.modules.pop(m, None)\n    importlib.import_module(n)\n"
        "print('ok', len(names))"
    )
    out = subprocess.run(
        [sys.executable, '-c', code, *LAYERS], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and out.stdout.strip() == f'ok {len(LAYERS)}', out.stderr[-2000:]


def test_no_merge_conflict_markers_in_tracked_files():
    # a merge once committed its markers into README and docs/: every tracked text file is checked
    files = subprocess.run(
        ['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    bad = []
    for f in files:
        if not f.endswith(('.py', '.md', '.txt', '.toml', '.cfg', '.sh')) and f != 'Makefile':
            continue
        with open(os.path.join(ROOT, f), encoding='utf-8') as fh:
            for i, line in enumerate(fh, 1):
                if line.startswith(('<<<<<<< ', '>>>>>>> ')) or line.rstrip('\n') == '=======':
                    bad.append(f'{f}:{i}')
    assert not bad, f'conflict markers: {bad}'
