"""``python -m unext_monai.deploy_app`` and, in a MONAI Application Package, ``python3 <this folder>``."""

import sys

from unext_monai.deploy_app.cli import main

if __name__ == "__main__":
    sys.exit(main())
