import sys

from stylestream.cli import main

sys.exit(main())
