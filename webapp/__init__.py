"""hxstate: a server-rendered Flask + htmx app whose state behaves the way users expect."""

import os
import secrets
from pathlib import Path

# torch's OpenMP threads otherwise spin between operations and starve the request threads that
# stream each token (a 40-token reply of the shipped model: 2.0 s instead of 0.2 s on 2 cores).
# Read once, when torch loads: so set before the imports below.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from flask import Flask  # noqa: E402
from flask_wtf.csrf import CSRFProtect  # noqa: E402
from werkzeug.middleware.proxy_fix import ProxyFix  # noqa: E402

from . import api, background_model, errors, generation, rendering, security, stores  # noqa: E402
from .pages import PAGES, home  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HTMX_VERSION = "4.0.1"

csrf = CSRFProtect()


def create_app(test_config=None):
    """Build the app: defaults, instance and environment config, test config, extensions, pages."""
    app = Flask(
        __name__,
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
        instance_relative_config=True,
    )
    app.config.from_mapping(
        SCORE_BOARD_SIZE=3,
        SCORE_POLL_SECONDS=3,
        SCORE_MAX_ABS=1e15,
        SCORE_RATE_LIMIT="60/minute",
        CHAT_RATE_LIMIT="20/minute",
        WORDS_RATE_LIMIT="30/minute",
        # The *_RATE_LIMIT values count per browser session; this counts all of an address's posts.
        ADDRESS_RATE_LIMIT="300/minute",
        RATELIMIT_ENABLED=True,
        WORDS_MAX_CHARS=5000,
        WORDS_POLL_SECONDS=3,
        MAX_CONTENT_LENGTH=64 * 1024,
        # A chat tab left open for hours must still post: the token lives as long as the session.
        WTF_CSRF_TIME_LIMIT=None,
        HTMX_VERSION=HTMX_VERSION,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=False,
        PROXY_FIX_HOPS=0,
        # Host names this app answers to (any other Host header gets 400); gunicorn adds the
        # address it is bound to (gunicorn.conf.py). Behind a proxy: the public names.
        TRUSTED_HOSTS=["localhost", "127.0.0.1"],
        PERMANENT_SESSION_LIFETIME=7 * 24 * 3600,
        SESSION_CLEANUP_EVERY=100,
        # An unchanged session is written back (its expiry and cookie pushed forward) once this
        # fraction of its lifetime has passed since its last write: every 100 minutes or so of 7 days.
        SESSION_REFRESH_AFTER=0.01,
        CHAT_MODEL=str(ROOT / "models" / "hxstate-chat"),
        CHAT_MAX_NEW_TOKENS=40,
        # Decoding: None takes the model's own generation config (the shipped model's was measured).
        CHAT_MIN_NEW_TOKENS=None,
        CHAT_DO_SAMPLE=None,
        CHAT_TOP_P=None,
        CHAT_TEMPERATURE=None,
        CHAT_REPETITION_PENALTY=None,
        CHAT_NO_REPEAT_NGRAM_SIZE=None,
        CHAT_SEED=None,
        CHAT_MAX_MESSAGE_CHARS=1000,
        CHAT_HISTORY_MAX_TURNS=200,
        CHAT_MAX_CONVERSATIONS=20,
        CHAT_LOCK_TIMEOUT=120,
        CHAT_LOCK_WAIT=60,
        CHAT_BATCH_SIZE=8,
        # An idle model waits until replies have stopped coming for this long before it starts, so
        # that chatters answered together are read in one pass (webapp/generation.py).
        CHAT_GATHER_SECONDS=0.05,
        CHAT_QUEUE_SIZE=16,
        CHAT_TIME_LIMIT=60,
        CHAT_STALL_GRACE=5,
        # A fast model writes hundreds of tokens a second: sending each alone would cost the server
        # more than generating it, and nobody reads faster than twenty updates a second.
        CHAT_STREAM_INTERVAL=0.05,
        # The shipped model writes a reply in a fifth of a second, too fast to be seen being
        # written: the stream shows at most this many characters a second (0: as written).
        CHAT_STREAM_PACE=60,
        REDIS_URL=None,
        REDIS_KEY_PREFIX="hxstate:",
    )
    app.config.from_pyfile("config.py", silent=True)
    app.config.from_prefixed_env("HXSTATE")
    if test_config is not None:
        app.config.from_mapping(test_config)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _instance_secret_key(Path(app.instance_path))

    hops = app.config["PROXY_FIX_HOPS"]
    if hops:  # behind that many trusted proxies: take the client's address and scheme from them
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    security.init_app(app)  # before CSRFProtect: another site's post is refused as such
    csrf.init_app(app)
    errors.init_app(app)
    stores.init_app(app)
    background_model.init_app(app)
    generation.init_app(app)

    app.register_blueprint(home.bp)
    for page in PAGES:
        app.register_blueprint(page.bp)
    app.register_blueprint(api.bp)
    csrf.exempt(api.bp)  # JSON only, which no cross-site form can send (webapp/api.py)
    app.jinja_env.globals["pages"] = PAGES
    app.jinja_env.globals["shared_fragment"] = rendering.shared_fragment
    return app


def _instance_secret_key(instance_path):
    """Read the key kept in the instance folder, creating it once, so restarts and workers agree."""
    path = instance_path / "secret_key"
    instance_path.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_hex(32))
    return path.read_text().strip()
