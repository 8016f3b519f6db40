"""Fleet mode: the agent that works the store's job queue on each accelerator host, and the local outbox that keeps
finished runs until the store has them."""
