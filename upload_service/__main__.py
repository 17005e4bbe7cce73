"""``python -m upload_service``: the same command as the ``upload-service`` script (upload_service/cli/)."""

import sys

from upload_service.cli import main

if __name__ == "__main__":
    sys.exit(main())
