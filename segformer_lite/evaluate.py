"""Command entry point only: ``python -m segformer_lite.evaluate``. The code is in training/evaluate.py."""
from .training.evaluate import main

if __name__ == "__main__":
    main()
