import sys

from o2o.cli import main

sys.exit(main())
