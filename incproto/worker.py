"""Deprecated alias: C{python -m incproto.worker} runs
L{incproto.workers.worker}.

Kept so that a C{--workers} supervisor started before an upgrade, which
spawns its workers as C{python -m incproto.worker}, can still start them
after it; it goes in 1.0.
"""

from incproto.workers.worker import main

if __name__ == "__main__":
    main()
