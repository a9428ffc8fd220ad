import sys

from midilib.cli import main

sys.exit(main())
