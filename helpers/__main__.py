"""``python -m helpers``: the command line of :mod:`helpers.cli`."""
import sys

try:
    from .cli import main
except KeyboardInterrupt:   # Ctrl-C while torch is still importing
    print("interrupted: nothing was written", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
