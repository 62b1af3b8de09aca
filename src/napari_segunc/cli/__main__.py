"""``python -m napari_segunc.cli``: the ``segunc`` command line."""

import sys

from . import main

sys.exit(main())
