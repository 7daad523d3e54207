"""The check that state kept in one process is never served by several worker processes."""


def check_workers(app, workers):
    """Refuse to serve the embedded stores, whose locks and rate limits live in one process, from
    several worker processes."""
    if workers > 1 and not app.extensions["stores"].shared_between_processes:
        raise RuntimeError(
            f"The embedded stores keep each chat's reply lock and the rate-limit counts in the "
            f"worker's memory, which is one process only, but {workers} workers were asked for: "
            f"they would write two replies of one chat at once and count limits apart. Run one "
            f"worker (HXSTATE_WORKERS=1, no --workers) and scale it with threads (HXSTATE_THREADS), "
            f"or share the state between workers through Redis (HXSTATE_REDIS_URL=redis://host:6379/0).")
