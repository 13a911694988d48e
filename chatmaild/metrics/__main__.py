import sys

from chatmaild.metrics.logmetrics import main

sys.exit(main())
