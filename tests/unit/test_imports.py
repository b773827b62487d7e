"""The house's import graph, read from the source (imports inside functions
included: a lazy import is still a dependency; those under TYPE_CHECKING
are not). Layers: pipeline/ -> transforms/ -> tfmodels/, and tfmodels/
without Beam. No cycles: a module that imports another that imports it
back works only in one import order, and costs a reader both modules."""

from __future__ import annotations

import ast
import os

import pytest

from tests import corpora

pytestmark = pytest.mark.unit

PACKAGES = ('pipeline', 'transforms', 'tfmodels')


def _modules() -> dict[str, str]:
  found = {}
  for package in PACKAGES:
    for folder, _, files in os.walk(os.path.join(corpora.ROOT, package)):
      for name in files:
        if name.endswith('.py'):
          path = os.path.join(folder, name)
          module = os.path.relpath(path, corpora.ROOT)[:-3].replace(
              os.sep, '.')
          found[module.removesuffix('.__init__')] = path
  return found


def _imported(tree: ast.AST, package: str) -> list[str]:
  """Absolute names each import statement names (for `from X import Y`,
  X.Y, which _graph reads as X where Y is not a module), outside `if
  TYPE_CHECKING:` blocks."""
  names = []
  for node in ast.iter_child_nodes(tree):
    if isinstance(node, ast.If) and 'TYPE_CHECKING' in ast.unparse(
        node.test):
      continue
    if isinstance(node, ast.Import):
      names += [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        parent = package.rsplit('.', node.level - 1)[0] if (
            node.level > 1) else package
        base = f'{parent}.{base}' if base else parent
      names += [f'{base}.{alias.name}' for alias in node.names]
    names += _imported(node, package)
  return names


def _graph() -> dict[str, set[str]]:
  modules = _modules()

  def owner(name: str):
    while name and name not in modules:
      name = name.rpartition('.')[0]
    return name or None

  graph = {}
  for module, path in modules.items():
    package = module if path.endswith('__init__.py') else (
        module.rpartition('.')[0])
    with open(path, encoding='utf-8') as f:
      tree = ast.parse(f.read(), path)
    # A module's own packages are imported before it, by Python: not a
    # dependency the module chose.
    mine = {module.rsplit('.', k)[0] for k in range(module.count('.') + 1)}
    graph[module] = {owner(name) for name in _imported(tree, package)
                     } - mine - {None}
  return graph


def _external(module: str) -> set[str]:
  """Top-level packages outside the house that a module imports."""
  path = _modules()[module]
  with open(path, encoding='utf-8') as f:
    tree = ast.parse(f.read(), path)
  return {name.split('.')[0] for name in _imported(tree, module)}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components of more than one module (Tarjan)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return found


def test_no_module_imports_one_that_imports_it_back():
  assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_one():
  # The check above could pass by finding nothing: a cycle of three.
  graph = {'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}
  assert _cycles(graph) == [['a', 'b', 'c']]


def test_layers_point_one_way():
  graph = _graph()
  upward = {(module, dep) for module, deps in graph.items() for dep in deps
            if (module.startswith('transforms') and dep.startswith(
                'pipeline')) or (module.startswith('tfmodels') and
                                 not dep.startswith('tfmodels'))}
  assert upward == set()


def test_tfmodels_is_tensorflow_only():
  beam = {module for module in _modules() if module.startswith('tfmodels')
          and 'apache_beam' in _external(module)}
  assert beam == set()
