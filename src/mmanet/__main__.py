import sys

from mmanet.cli import main

sys.exit(main())
