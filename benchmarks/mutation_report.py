"""Mutation testing as a measurement: the share of one-token bugs in a module that its tests catch.

  python benchmarks/mutation_report.py vasa_jax/diffusion.py tests/test_diffusion.py tests/test_math_diffusion.py
  python benchmarks/mutation_report.py vasa_jax/train/stage2.py tests/test_math_stage2.py

benchmarks/MUTATION.md has the measured modules, their commands and their survivors.

Mutants are made on the syntax tree (arithmetic and comparison operators swapped, numbers
changed, a unary minus, `abs`, a boolean or `and`/`or` flipped); strings are left alone.
Each mutant is executed into the live module and pytest runs in this one process, so JAX
is imported once and a mutant costs only its tests. Names that other loaded modules took
with `from m import f` are rebound to the mutant's objects (and back afterwards), and the
project's `functools.lru_cache`s are cleared around every mutant, so cached models or
jitted steps built from the unmutated code are not reused. Objects made from the original
before the run (instances, closures) still hold it; the tests build their own.
Prints one line per surviving mutant and the share killed; `--json` writes them all.
"""

import argparse
import ast
import contextlib
import copy
import importlib
import io
import json
import os
import signal
import sys
import time

_BINOP_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
               ast.Pow: ast.Mult, ast.Mod: ast.FloorDiv, ast.MatMult: ast.Mult, ast.BitXor: ast.BitOr,
               ast.BitOr: ast.BitAnd, ast.BitAnd: ast.BitOr, ast.LShift: ast.RShift, ast.RShift: ast.LShift}
_CMP_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
             ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}


def _sites(tree, functions):
  """(node path, description) for every mutable node inside the selected functions (all if None)."""
  out = []

  def visit(node, inside, path):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      inside = inside or functions is None or node.name in functions
    if inside:
      line = getattr(node, "lineno", 0)
      if isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAP:
        out.append((path, "binop", f"{line}: {type(node.op).__name__} -> {_BINOP_SWAP[type(node.op)].__name__}"))
      elif isinstance(node, ast.AugAssign) and type(node.op) in _BINOP_SWAP:
        out.append((path, "augop", f"{line}: {type(node.op).__name__}= -> {_BINOP_SWAP[type(node.op)].__name__}="))
      elif isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
          if type(op) in _CMP_SWAP:
            out.append((path + (("cmp", i),), "cmp", f"{line}: {type(op).__name__} -> {_CMP_SWAP[type(op)].__name__}"))
      elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not)):
        out.append((path, "unary", f"{line}: drop {type(node.op).__name__}"))
      elif isinstance(node, ast.BoolOp):
        other = "Or" if isinstance(node.op, ast.And) else "And"
        out.append((path, "boolop", f"{line}: {type(node.op).__name__} -> {other}"))
      elif isinstance(node, ast.Constant) and type(node.value) in (int, float) and not isinstance(node.value, bool):
        out.append((path, "number", f"{line}: {node.value!r} -> {_new_number(node.value)!r}"))
      elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
        out.append((path, "bool", f"{line}: {node.value} -> {not node.value}"))
      elif (isinstance(node, ast.Call) and len(node.args) == 1 and not node.keywords
            and ((isinstance(node.func, ast.Attribute) and node.func.attr == "abs")
                 or (isinstance(node.func, ast.Name) and node.func.id == "abs"))):
        out.append((path, "abs", f"{line}: drop abs"))
    for field, value in ast.iter_fields(node):
      if isinstance(value, list):
        for i, child in enumerate(value):
          if isinstance(child, ast.AST) and not _is_docstring(node, field, i):
            visit(child, inside, path + ((field, i),))
      elif isinstance(value, ast.AST):
        visit(value, inside, path + ((field, None),))

  visit(tree, False, ())
  return out


def _is_docstring(parent, field, i):
  return (field == "body" and i == 0 and isinstance(parent, (ast.Module, ast.FunctionDef, ast.ClassDef))
          and isinstance(parent.body[0], ast.Expr) and isinstance(parent.body[0].value, ast.Constant))


def _new_number(v):
  if isinstance(v, int):
    return v + 1
  return 1.0 if v == 0.0 else v * 1.5


def _apply(tree, path, kind):
  tree = copy.deepcopy(tree)
  node = tree
  cmp_index = None
  for field, i in path:
    if field == "cmp":
      cmp_index = i
      break
    node = getattr(node, field) if i is None else getattr(node, field)[i]
  if kind in ("binop", "augop"):
    node.op = _BINOP_SWAP[type(node.op)]()
  elif kind == "cmp":
    node.ops[cmp_index] = _CMP_SWAP[type(node.ops[cmp_index])]()
  elif kind == "boolop":
    node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
  elif kind == "number":
    node.value = _new_number(node.value)
  elif kind == "bool":
    node.value = not node.value
  elif kind in ("unary", "abs"):
    _replace(tree, path, node.operand if kind == "unary" else node.args[0])
  return ast.fix_missing_locations(tree)


def _replace(tree, path, new):
  parent = tree
  for field, i in path[:-1]:
    parent = getattr(parent, field) if i is None else getattr(parent, field)[i]
  field, i = path[-1]
  if i is None:
    setattr(parent, field, new)
  else:
    getattr(parent, field)[i] = new


class _Timeout(Exception):
  pass


def _run_tests(pytest, tests, timeout):
  def on_alarm(signum, frame):
    raise _Timeout()

  old = signal.signal(signal.SIGALRM, on_alarm)
  signal.alarm(timeout)
  try:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
      code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-W", "ignore", *tests])
    return "survived" if code == 0 else "killed"
  except _Timeout:
    return "killed (timeout)"
  except Exception:  # noqa: BLE001 - a mutant that breaks pytest itself is caught.
    return "killed (error)"
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _project_modules(root):
  return [m for m in list(sys.modules.values())
          if os.path.abspath(getattr(m, "__file__", None) or "/").startswith(root + os.sep)]


def _importers(module, root):
  """(importing module, its name, the mutated module's name) for every `from module import name`."""
  out = []
  for m in _project_modules(root):
    if m is module:
      continue
    try:
      tree = ast.parse(open(m.__file__).read())
    except (OSError, SyntaxError, UnicodeDecodeError):
      continue
    for node in tree.body:
      if isinstance(node, ast.ImportFrom) and node.module == module.__name__ and not node.level:
        for alias in node.names:
          out.append((m, alias.asname or alias.name, alias.name))
  return out


def _rebind(module, importers, root):
  for m, as_name, name in importers:
    if name in module.__dict__:
      setattr(m, as_name, module.__dict__[name])
  for m in _project_modules(root):
    for value in list(vars(m).values()):
      if callable(getattr(value, "cache_clear", None)) and getattr(value, "__module__", "").startswith("vasa_jax"):
        value.cache_clear()


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
  p.add_argument("module", help="source file, e.g. vasa_jax/diffusion.py")
  p.add_argument("tests", nargs="+", help="pytest arguments selecting the tests to run per mutant")
  p.add_argument("--functions", help="comma-separated function names to mutate (default: the whole module)")
  p.add_argument("--timeout", type=int, default=300, help="seconds per mutant before it counts as killed")
  p.add_argument("--json", help="write every mutant and its outcome to this file")
  p.add_argument("--skip", type=int, default=0, help="start after this many mutants (to resume a run)")
  p.add_argument("--only", help="comma-separated mutant numbers to run (e.g. last run's survivors)")
  p.add_argument("--verbose", action="store_true", help="print every mutant, not only the survivors")
  args = p.parse_args()
  import pytest

  path = os.path.abspath(args.module)
  name = os.path.relpath(path).removesuffix(".py").replace(os.sep, ".")
  # The package of the working directory, not another checkout an editable install points to.
  sys.path.insert(0, os.getcwd())
  module = importlib.import_module(name)
  if os.path.abspath(module.__file__) != path:
    sys.exit(f"{name} imports from {module.__file__}, not {path}: run from the checkout's root")
  source = open(path).read()
  tree = ast.parse(source)
  functions = set(args.functions.split(",")) if args.functions else None
  sites = _sites(tree, functions)
  print(f"{args.module}: {len(sites)} mutants; tests: {' '.join(args.tests)}", flush=True)
  if _run_tests(pytest, args.tests, args.timeout) != "survived":
    sys.exit("the tests fail on the unmutated code; fix them first")
  saved = dict(module.__dict__)
  root = os.getcwd()
  importers = _importers(module, root)
  only = {int(x) for x in args.only.split(",")} if args.only else set()
  results, t0 = [], time.time()
  try:
    for n, (site, kind, desc) in enumerate(sites, start=1):
      if n <= args.skip or (args.only and n not in only):
        continue
      try:
        code = compile(_apply(tree, site, kind), path, "exec")
        exec(code, module.__dict__)  # noqa: S102 - the point of the tool.
        _rebind(module, importers, root)
        outcome = _run_tests(pytest, args.tests, args.timeout)
      except Exception as e:  # noqa: BLE001 - a mutant that does not even import.
        outcome = f"killed (import: {type(e).__name__})"
      finally:
        module.__dict__.update(saved)
        _rebind(module, importers, root)
      results.append({"mutant": desc, "kind": kind, "outcome": outcome})
      if outcome == "survived" or args.verbose:
        print(f"  {n:4d} {outcome:9s} {desc}    [{kind}]  {time.time() - t0:.0f} s", flush=True)
  except KeyboardInterrupt:
    print("interrupted: reporting the mutants run so far")
  killed = sum(r["outcome"] != "survived" for r in results)
  print(f"{args.module}: {killed}/{len(results)} killed ({100 * killed / max(len(results), 1):.0f}%) "
        f"in {time.time() - t0:.0f} s", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"module": args.module, "tests": args.tests, "results": results}, f, indent=1)


if __name__ == "__main__":
  main()
