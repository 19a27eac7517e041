"""Command entry point only: ``python -m segformer_lite.homework``. The code is in course/homework.py."""
import sys

from .course.homework import main

if __name__ == "__main__":
    sys.exit(main())
