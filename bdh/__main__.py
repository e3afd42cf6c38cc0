import sys

from bdh.cli import main

sys.exit(main())
