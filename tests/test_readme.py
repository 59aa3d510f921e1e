"""The README fits on a page, its Layout names every module of the package, and
what the README and docs/ point at exists: relative links (and their #anchors),
file paths, `nin_jax.x.y` names and `python -m` modules."""

import ast
import glob
import os
import re
from typing import Iterator

from conftest import REPO
from readme_blocks import page_text

MAX_README_LINES = 250
# Every module but the packages' __init__ files and the config files, which the
# Layout names in one row (`nin_jax/configs/*.py`).
UNLISTED = re.compile(r'(^|/)__init__\.py$|^nin_jax/configs/')
LISTED_MODULE = re.compile(r'`(nin_jax/[\w/]+\.py)`')
LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')
FILE_PATH = re.compile(r'(?<![\w./-])((?:nin_jax|experiments|benchmarks|tests|docs)/[\w/.*-]+\.(?:py|sh|md))')
DOTTED_NAME = re.compile(r'(?<![\w./-])nin_jax(?:\.[A-Za-z_]\w*)+')
RUN_MODULE = re.compile(r'python -m (nin_jax[\w.]*)')


def package_modules() -> set[str]:
  paths = glob.glob(os.path.join(REPO, 'nin_jax', '**', '*.py'), recursive=True)
  relative = (os.path.relpath(p, REPO).replace(os.sep, '/') for p in paths)
  return {p for p in relative if not UNLISTED.search(p)}


def subpackages() -> set[str]:
  found = glob.glob(os.path.join(REPO, 'nin_jax', '*', '__init__.py'))
  return {os.path.basename(os.path.dirname(p)) for p in found} - {'configs'}


def section(text: str, heading: str) -> str:
  """The text under `## heading`, up to the next `## ` heading."""
  return text.split(f'\n## {heading}\n', 1)[1].split('\n## ', 1)[0]


def layout_mismatches(layout: str, modules: set[str]) -> tuple[set[str], set[str]]:
  """(modules the layout leaves out, modules it lists that do not exist)."""
  listed = set(LISTED_MODULE.findall(layout))
  return modules - listed, listed - modules


def without_fenced_code(text: str) -> str:
  return re.sub(r'```.*?```', '', text, flags=re.S)


def pages() -> list[str]:
  found = glob.glob(os.path.join(REPO, 'docs', '**', '*.md'), recursive=True)
  return ['README.md'] + sorted(os.path.relpath(p, REPO) for p in found)


def anchors(page: str) -> Iterator[str]:
  """GitHub's anchors for the headings of `page`: lower case, punctuation dropped,
  spaces to hyphens, a repeated anchor numbered."""
  seen: dict[str, int] = {}
  for heading in re.findall(r'^#+ (.+)$', without_fenced_code(page_text(page)), re.M):
    slug = re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')
    seen[slug] = seen.get(slug, -1) + 1
    yield slug if seen[slug] == 0 else f'{slug}-{seen[slug]}'


def broken_links(page: str) -> list[str]:
  broken = []
  for target in LINK.findall(without_fenced_code(page_text(page))):
    if re.match(r'[a-z]+:', target):
      continue  # https:, mailto:
    path, _, anchor = target.partition('#')
    resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
    if not os.path.exists(os.path.join(REPO, resolved)):
      broken.append(f'{page}: {target} (no {resolved})')
    elif anchor and resolved.endswith('.md') and anchor not in set(anchors(resolved)):
      broken.append(f'{page}: {target} (no heading #{anchor} in {resolved})')
  return broken


def module_defines(path: str, name: str) -> bool:
  """Whether the module at `path` binds `name` at its top level."""
  for node in ast.parse(open(path).read()).body:
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
      return True
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
      targets = node.targets if isinstance(node, ast.Assign) else [node.target]
      if any(isinstance(t, ast.Name) and t.id == name for t in targets):
        return True
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      if any((a.asname or a.name) == name for a in node.names):
        return True
  return False


def module_file(dotted: str) -> str | None:
  base = os.path.join(REPO, *dotted.split('.'))
  for path in (base + '.py', os.path.join(base, '__init__.py')):
    if os.path.exists(path):
      return path
  return None


def resolves(dotted: str) -> bool:
  """`nin_jax.a.b` is a module, or a module and one name defined in it."""
  if module_file(dotted):
    return True
  parent, _, name = dotted.rpartition('.')
  path = module_file(parent)
  return path is not None and module_defines(path, name)


def test_the_readme_fits_on_a_page():
  lines = page_text().count('\n')
  assert lines <= MAX_README_LINES, f'README.md has {lines} lines; move detail to docs/'


def test_the_layout_lists_every_module_and_no_other():
  missing, unknown = layout_mismatches(section(page_text(), 'Layout'), package_modules())
  assert not missing, f"add these to the README's Layout: {sorted(missing)}"
  assert not unknown, f"the README's Layout lists modules that do not exist: {sorted(unknown)}"


def test_the_layout_check_catches_a_missing_and_a_stale_module():
  layout = section(page_text(), 'Layout')
  row = next(line for line in layout.splitlines() if '`nin_jax/train/loop.py`' in line)
  edited = layout.replace(row, '| `nin_jax/train/gone.py` | a module that was removed |')
  missing, unknown = layout_mismatches(layout, package_modules())
  assert layout_mismatches(edited, package_modules()) == (
      missing | {'nin_jax/train/loop.py'}, unknown | {'nin_jax/train/gone.py'})


def test_the_layout_states_the_direction_through_every_subpackage():
  layout = section(page_text(), 'Layout')
  direction = next(line for line in layout.splitlines() if '←' in line)
  assert set(re.findall(r'\w+', direction)) == subpackages(), direction


def test_every_relative_link_in_the_readme_and_docs_resolves():
  broken = [b for page in pages() for b in broken_links(page)]
  assert not broken, '\n'.join(broken)


def test_every_documented_path_name_and_module_command_exists():
  missing = []
  for page in pages():
    text = page_text(page)
    for path in set(FILE_PATH.findall(text)):
      if not glob.glob(os.path.join(REPO, path)):
        missing.append(f'{page}: {path}')
    missing += [f'{page}: {n}' for n in set(DOTTED_NAME.findall(text)) if not resolves(n)]
    for module in set(RUN_MODULE.findall(text)):
      path = module_file(module)
      if path is None or "__name__ == '__main__'" not in open(path).read():
        missing.append(f'{page}: python -m {module}')
  assert not missing, 'documented but not in the code:\n' + '\n'.join(sorted(missing))
