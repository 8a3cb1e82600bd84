"""`python -m taskforce` runs the same CLI as the `taskforce` console script."""

from __future__ import annotations

from taskforce.api.cli import main

if __name__ == "__main__":
    main()
