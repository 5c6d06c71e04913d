import sys

from structune.cli import main

sys.exit(main())
