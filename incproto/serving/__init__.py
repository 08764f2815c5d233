"""One process's serving stack: listening, draining, signals, metrics and
health, built along the data path by L{incproto.serving.stack.serving_stack}."""
