"""``python -m noisysam``: the command line, as the ``noisysam`` script (and what ``torchrun -m noisysam`` starts
in every process)."""

from noisysam.cli.commands import main

if __name__ == "__main__":
    main()
