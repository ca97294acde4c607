"""``python -m beyondgd`` (and ``torchrun -m beyondgd``): the ``beyondgd`` command."""

import sys

from beyondgd.cli import main

if __name__ == "__main__":
    sys.exit(main())
