"""Command entry point only: ``python -m segformer_lite.train``. The code is in training/train.py."""
from .training.train import main

if __name__ == "__main__":
    main()
