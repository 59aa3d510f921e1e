"""The README's shell blocks, as the tests that run them read and adapt them."""

import os
import re

from conftest import REPO


def readme_block(*must_contain: str) -> str:
  """The one ```bash block of the README that holds every string given."""
  with open(os.path.join(REPO, 'README.md')) as f:
    blocks = re.findall(r'```bash\n(.*?)```', f.read(), re.S)
  found = [b for b in blocks if all(m in b for m in must_contain)]
  assert len(found) == 1, f'the README has {len(found)} blocks with {must_contain}'
  return found[0]


def edited(block: str, changes) -> str:
  """`block` with each (old, new) replaced; fails when the README no longer has `old`,
  so a test that runs a README block breaks when the block changes under it."""
  for old, new in changes:
    assert old in block, f'the README block no longer has {old!r}'
    block = block.replace(old, new)
  return block
