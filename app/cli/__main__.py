"""``python -m qcf_studio.app.cli``: the ``qcf-studio`` command."""

import sys

from qcf_studio.app.cli import main

sys.exit(main())
