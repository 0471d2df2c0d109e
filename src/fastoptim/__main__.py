"""python -m fastoptim: see fastoptim.cli."""
from fastoptim.cli import main

raise SystemExit(main())
