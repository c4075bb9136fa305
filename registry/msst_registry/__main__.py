import sys

from .listing import main

sys.exit(main())
