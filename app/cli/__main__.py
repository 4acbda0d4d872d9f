"""``python -m app.cli``: the ``qcf-studio`` command."""

import sys

from app.cli import main

sys.exit(main())
