import sys

from filewarden.cli import main

sys.exit(main())
