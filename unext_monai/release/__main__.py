"""``python -m unext_monai.release``: see :mod:`unext_monai.release`."""

import sys

from unext_monai.release import main

sys.exit(main())
