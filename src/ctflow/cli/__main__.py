"""``python -m ctflow.cli``: the ``ctflow`` command."""

import sys

from ctflow.cli import main

sys.exit(main())
