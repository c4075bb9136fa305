import sys

from bsmamba2_plugin.evaluate.cli import main

sys.exit(main())
