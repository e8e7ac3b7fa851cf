"""``python -m helpers.bench``: run the whole benchmark (or ``--road`` alone)."""
from . import main

main()
