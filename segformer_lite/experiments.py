"""Command entry point only: ``python -m segformer_lite.experiments``. The code is in training/experiments.py."""
from .training.experiments import main

if __name__ == "__main__":
    main()
