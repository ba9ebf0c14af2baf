import sys

from threadnet.cli import main

sys.exit(main())
