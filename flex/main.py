"""Flex Template entry point (FLEX_TEMPLATE_PYTHON_PY_FILE): the same job as
`python -m pipeline.run`, with the template's parameters as its flags."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.run import main

if __name__ == '__main__':
  sys.exit(main())
