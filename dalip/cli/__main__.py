"""``python -m dalip.cli``: the ``dalip`` command (torchrun ... -m dalip.cli train ...)."""

import sys

from dalip.cli import main

sys.exit(main())
