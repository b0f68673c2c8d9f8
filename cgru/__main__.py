"""`python -m cgru`: the same command as `cgru` (see cgru/cli.py)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
