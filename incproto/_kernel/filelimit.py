# -*- test-case-name: tests.unit.test_filelimit -*-
"""The open files limit: raised as far as the system allows, for the server
(which holds a descriptor per connection, queued ones included) and for the
client (which opens thousands at once).
"""

from __future__ import annotations

from twisted.logger import Logger


def raise_file_limit(needed: int, log: Logger) -> int:
    """
    Raise the soft RLIMIT_NOFILE to the hard limit; log it, and warn if it is
    below C{needed}.

    @return: the soft limit now in force.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            log.warn("could not raise the open files limit: {error}", error=e)
    log.info("open files limit: {soft}", soft=soft)
    if soft < needed:
        log.warn(
            "the open files limit ({soft}) is below the {needed} descriptors "
            "that the connection limit and queue may need",
            soft=soft,
            needed=needed,
        )
    return soft
