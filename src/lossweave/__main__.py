"""``python -m lossweave COMMAND ...``: the same tool as the ``lossweave`` script."""

from lossweave.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
