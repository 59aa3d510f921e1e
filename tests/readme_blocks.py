"""The README's and the docs/ pages' shell blocks, as the tests that run them read and adapt them."""

import os
import re

from conftest import REPO


def page_text(page: str = 'README.md') -> str:
  """The text of `page`, a path from the repository root (README.md, docs/install.md)."""
  with open(os.path.join(REPO, page)) as f:
    return f.read()


def readme_block(*must_contain: str, page: str = 'README.md') -> str:
  """The one ```bash block of `page` that holds every string given."""
  blocks = re.findall(r'```bash\n(.*?)```', page_text(page), re.S)
  found = [b for b in blocks if all(m in b for m in must_contain)]
  assert len(found) == 1, f'{page} has {len(found)} blocks with {must_contain}'
  return found[0]


def edited(block: str, changes) -> str:
  """`block` with each (old, new) replaced; fails when the block no longer has `old`,
  so a test that runs a documented block breaks when the block changes under it."""
  for old, new in changes:
    assert old in block, f'the documented block no longer has {old!r}'
    block = block.replace(old, new)
  return block
