"""The kernel and reactor tricks beneath incproto's protocol and wrappers.

Private: what Twisted's transports, ports and loggers do not offer, each in
a module of its own (closing with a FIN, the socket's own counters,
writing through to the socket, accept pacing, rate-limited logging, the
open files limit).  Nothing here is API; import from L{incproto} and its
public modules instead.
"""
