"""`python -m aas_core`: the command line for every engine."""

from aas_core.cli import main

raise SystemExit(main())
