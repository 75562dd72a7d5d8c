"""`python -m hubspot_sim`: run the simulator (options in `hubspot_sim.cli`)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main()
