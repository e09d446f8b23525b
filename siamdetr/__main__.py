"""`python -m siamdetr` is the `siamdetr` command."""

import sys

from siamdetr.cli import main

sys.exit(main())
