"""``python -m embedkd`` (also what ``torchrun -m embedkd`` runs)."""

import sys

from embedkd.cli import main

sys.exit(main())
