import sys

from qtbench.cli import main

sys.exit(main())
