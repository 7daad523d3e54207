"""The check that state kept in one process's memory is never served by several worker processes."""


def check_workers(app, workers):
    """Refuse to serve state kept in one process's memory from several worker processes."""
    local = [name for name, store in app.extensions.items()
             if getattr(store, "shared_between_processes", None) is False]
    if workers > 1 and local:
        raise RuntimeError(
            f"The score board and the other global state ({', '.join(local)}) are kept in memory, "
            f"which is global to one process only, but {workers} workers were asked for: each would "
            f"show its own. Run one worker (HXSTATE_WORKERS=1, no --workers) and scale it with "
            f"threads (HXSTATE_THREADS), or share the state between workers through Redis "
            f"(HXSTATE_REDIS_URL=redis://host:6379/0).")
