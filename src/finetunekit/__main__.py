"""`python -m finetunekit` (also what `accelerate launch -m finetunekit` runs)."""

import sys

from .cli import main

sys.exit(main())
