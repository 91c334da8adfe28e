import sys

from omnisdk.cli import main

sys.exit(main())
