import sys

from quadriga.cli import main

sys.exit(main())
