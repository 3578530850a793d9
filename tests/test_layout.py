"""The package's shape: small files and functions, no private JAX imports, named parts."""

import ast
import os

from tests.conftest import REPO

PACKAGE = os.path.join(REPO, "vae_jax")
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60


def _sources():
  for root, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(root, name)
        with open(path) as f:
          yield os.path.relpath(path, REPO), f.read()


def test_files_and_functions_are_small():
  too_long = []
  for path, text in _sources():
    if text.count("\n") > MAX_FILE_LINES:
      too_long.append(f"{path}: {text.count(chr(10))} lines")
    for node in ast.walk(ast.parse(text)):
      if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        length = node.end_lineno - node.lineno + 1
        if length > MAX_FUNCTION_LINES:
          too_long.append(f"{path}:{node.lineno} {node.name}() has {length} lines")
  assert not too_long, "\n".join(too_long)


def test_no_private_jax_imports():
  offenders = [path for path, text in _sources() if "jax._src" in text]
  assert not offenders


def test_the_top_level_holds_entry_points_and_a_few_shared_modules():
  top = sorted(f for f in os.listdir(PACKAGE) if f.endswith(".py"))
  assert top == [
    "__init__.py",
    "cli.py",
    "collectives.py",
    "configuration.py",
    "distributed.py",
    "errors.py",
    "evaluate.py",
    "main.py",
    "runs.py",
  ]
  folders = sorted(d for d in os.listdir(PACKAGE) if os.path.isdir(os.path.join(PACKAGE, d)))
  folders = [d for d in folders if not d.startswith("__")]
  assert folders == ["data", "evaluation", "losses", "models", "sweep", "tools", "training"]
