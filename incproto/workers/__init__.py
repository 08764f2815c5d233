"""The multi-process layer of C{--workers}: one listening socket shared by
several processes (L{incproto.workers.sharing}), the supervisor that spawns
and replaces them (L{incproto.workers.supervisor}), and the worker program
itself (L{incproto.workers.worker})."""
