"""`python -m planner ...` (and `torchrun ... -m planner run PLAN`)."""

from planner.cli import main

if __name__ == "__main__":
    main()
