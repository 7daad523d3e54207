"""Server-side sessions that cost nothing until they hold state: read on first use, stored only once
they hold more than a CSRF token, and written only when they changed (or their expiry is due).

A browser that only reads pages stores nothing: its CSRF token lives in a signed cookie
(`CSRF_COOKIE`), and Flask-WTF finds it in the session as usual. The first value that is state
(a last score, a chat keyed by the session id) moves the session to the store, in the instance
database or in Redis (`webapp/stores.py` chooses), under a new random id in an HttpOnly cookie.
A request that never touches `session` (a 304 poll, `/scores.json`, a static file) never reads
the store. An unchanged session is written back, to push its expiry forward, once
`SESSION_REFRESH_AFTER` of its lifetime has passed since its last write.

If the store cannot be reached, only the requests that use the session fail, with a 503
(`readable_session`); the others go on.

hxstate keeps its own `SessionInterface` rather than flask-session's: flask-session reads the store
before every request and stores every session that holds only a CSRF token, and changing that needs
its private methods. The stored format is the one flask-session wrote (the same table and keys,
JSON), so sessions stored before carry on; anything that is not JSON is refused, never unpickled.
"""

import hmac
import json
import secrets
from datetime import datetime, timedelta
from functools import lru_cache

import sqlalchemy as sa
from flask import abort, current_app, g, session
from flask.sessions import SessionInterface, SessionMixin
from flask_wtf.csrf import generate_csrf
from itsdangerous import BadSignature, TimestampSigner, URLSafeSerializer, URLSafeTimedSerializer

from .database import Base, timestamp, utcnow
from .store_errors import STORE_DOWN, STORE_ERRORS

CSRF_KEY = "csrf_token"  # where Flask-WTF keeps its raw token in the session
CSRF_COOKIE = "csrf"
KEY_PREFIX = "session:"  # flask-session's, so that sessions it stored are found


class Session(SessionMixin):
    """One request's session, read from its store the first time it is used."""

    permanent = True  # every session lasts PERMANENT_SESSION_LIFETIME

    def __init__(self, load, store):
        self._load, self._store = load, store
        self._data = None
        self.sid = self.stored_expiry = None
        self.unavailable = self.modified = self.new = self.written = False

    @property
    def loaded(self):
        """Whether this request has used its session."""
        return self._data is not None

    def _values(self):
        if self._data is None:
            self.sid, self._data, self.stored_expiry, self.unavailable = self._load()
        return self._data

    def __getitem__(self, key):
        return self._values()[key]

    def __setitem__(self, key, value):
        self._values()[key] = value
        self.modified = True

    def __delitem__(self, key):
        del self._values()[key]
        self.modified = True

    def __iter__(self):
        return iter(self._values())

    def __len__(self):
        return len(self._values())

    def keep(self):
        """Store the session now, under an id of its own, if it is not stored yet: a store keyed by
        the id is about to use it (stored only at the end of the request, it would not exist yet
        for a cleanup that deletes what no session owns)."""
        self._values()
        if self.sid is None:
            self._store(self)

    def holds_state(self):
        """Whether the session holds anything but its CSRF token, and so belongs in the store."""
        return bool(set(self._values()) - {CSRF_KEY})


class Sessions(SessionInterface):
    """Flask's session interface over a session store (`SqlSessionStore` or `RedisSessionStore`)."""

    def __init__(self, store, refresh_after):
        self.store = store
        self.refresh_after = refresh_after

    def open_session(self, app, request):
        # The cookies too are read on first use.
        return Session(lambda: self._read(app, request), lambda session: self._store(app, session))

    def _read(self, app, request):
        """(sid, values, stored expiry, unavailable) of the session the request's cookies name."""
        sid = request.cookies.get(self.get_cookie_name(app))
        signed_token = request.cookies.get(CSRF_COOKIE)
        if sid:
            try:
                found = self.store.load(sid)
            except STORE_ERRORS:
                app.logger.exception("session store unreachable")
                return None, {}, None, True
            if found is not None:
                return sid, found[0], found[1], False
        try:
            token = URLSafeSerializer(app.secret_key, salt=CSRF_COOKIE).loads(signed_token or "")
        except BadSignature:
            return None, {}, None, False
        return None, {CSRF_KEY: token}, None, False

    def save_session(self, app, session, response):
        if not session.loaded:
            return
        response.vary.add("Cookie")  # what this response shows may depend on the browser's session
        if session.unavailable:
            return
        if session.sid is None:  # not in the store
            if session.holds_state():
                self._store(app, session)
            elif session.modified and CSRF_KEY in session:
                self._set_csrf_cookie(app, response, session[CSRF_KEY])
        elif session.modified or self._due(session, app.permanent_session_lifetime):
            self._store(app, session)
        if not session.written:
            return
        if session.new:  # the session holds the CSRF token from now on
            response.delete_cookie(
                CSRF_COOKIE, path=self.get_cookie_path(app), httponly=True,
                secure=self.get_cookie_secure(app), samesite=self.get_cookie_samesite(app))
        response.set_cookie(
            self.get_cookie_name(app), session.sid, expires=session.stored_expiry, httponly=True,
            domain=self.get_cookie_domain(app), path=self.get_cookie_path(app),
            secure=self.get_cookie_secure(app), samesite=self.get_cookie_samesite(app))

    def _store(self, app, session):
        """Write the session, under a new id if it has none, with its expiry pushed forward."""
        lifetime = app.permanent_session_lifetime
        if session.sid is None:
            session.sid, session.new = secrets.token_urlsafe(32), True
        try:
            self.store.save(session.sid, dict(session), lifetime)
        except STORE_ERRORS:
            session.unavailable = True  # not tried again for the 503 this gets (webapp/errors.py)
            raise
        session.stored_expiry = utcnow() + lifetime
        session.modified, session.written = False, True

    def _due(self, session, lifetime):
        """Whether an unchanged session's expiry should be pushed forward now."""
        return session.stored_expiry - utcnow() < lifetime * (1 - self.refresh_after)

    def _set_csrf_cookie(self, app, response, token):
        """Keep the CSRF token of a browser that has no stored session in a signed cookie."""
        response.set_cookie(
            CSRF_COOKIE, URLSafeSerializer(app.secret_key, salt=CSRF_COOKIE).dumps(token),
            max_age=app.permanent_session_lifetime, httponly=True, path=self.get_cookie_path(app),
            secure=self.get_cookie_secure(app), samesite=self.get_cookie_samesite(app))


def _decode(data):
    """A stored session's values: JSON only (never pickle, whoever could write to the store)."""
    values = json.loads(data)
    if not isinstance(values, dict):
        raise ValueError("a stored session is not a JSON object")
    return values


class StoredSession(Base):
    """A session in the embedded database: the table flask-session created, with its columns."""

    __tablename__ = "sessions"
    id = sa.Column(sa.Integer, primary_key=True)
    session_id = sa.Column(sa.String(255), unique=True)
    data = sa.Column(sa.LargeBinary)
    expiry = sa.Column(sa.DateTime)


class SqlSessionStore:
    """Sessions in the embedded database: one SELECT to read, one UPDATE (or INSERT) to write."""

    table = StoredSession.__table__

    def __init__(self, db):
        self._db = db

    def load(self, sid):
        """(values, expiry) of the unexpired session `sid`, or None."""
        with self._db.read() as connection:
            row = connection.execute("SELECT data, expiry FROM sessions WHERE session_id = ? AND expiry > ?",
                                     (KEY_PREFIX + sid, timestamp(utcnow()))).fetchone()
        if row is None:  # an expired row stays until the cleanup deletes it
            return None
        try:
            return _decode(row[0]), datetime.fromisoformat(row[1])
        except ValueError:
            return None

    def save(self, sid, values, lifetime):
        """Store the session with an expiry `lifetime` from now, in one statement."""
        self._db.write_statement(
            "INSERT INTO sessions (data, expiry, session_id) VALUES (?, ?, ?) ON CONFLICT (session_id) "
            "DO UPDATE SET data = excluded.data, expiry = excluded.expiry",
            (json.dumps(values).encode(), timestamp(utcnow() + lifetime), KEY_PREFIX + sid))

    def delete(self, sid):
        """Forget the session `sid`."""
        self._db.write_statement("DELETE FROM sessions WHERE session_id = ?", (KEY_PREFIX + sid,))

    # The ids of the stored sessions, as a subquery (for the cleanup of what they kept).
    LIVE_IDS = f"SELECT substr(session_id, {len(KEY_PREFIX) + 1}) FROM sessions"

    @staticmethod
    def delete_expired(connection):
        """Delete the expired sessions, in the caller's transaction on `connection`."""
        connection.execute("DELETE FROM sessions WHERE expiry <= ?", (timestamp(utcnow()),))


class RedisSessionStore:
    """Sessions in Redis, each a JSON string that Redis expires by itself."""

    def __init__(self, client, prefix):
        self._client = client
        self._prefix = prefix + KEY_PREFIX

    def load(self, sid):
        """(values, expiry) of the session `sid`, or None."""
        with self._client.pipeline() as pipe:
            data, ttl = pipe.get(self._prefix + sid).pttl(self._prefix + sid).execute()
        if data is None or ttl < 0:
            return None
        try:
            return _decode(data), utcnow() + timedelta(milliseconds=ttl)
        except ValueError:
            return None

    def save(self, sid, values, lifetime):
        """Store the session with an expiry `lifetime` from now."""
        self._client.set(self._prefix + sid, json.dumps(values), px=int(lifetime.total_seconds() * 1000))

    def delete(self, sid):
        """Forget the session `sid`."""
        self._client.delete(self._prefix + sid)


def session_unavailable():
    """Whether this request's session could not be read from its store."""
    current = session._get_current_object()
    if isinstance(current, Session):
        current._values()
        return current.unavailable
    return False


def readable_session():
    """This request's session, or a 503 saying its store cannot be reached."""
    if session_unavailable():
        abort(503, STORE_DOWN)
    return session


class _OneTimeSigner(TimestampSigner):
    """Flask-WTF's signer with one fixed time in every signature: tokens that never expire are
    checked without reading it, and so every worker signs a session's token alike."""

    def get_timestamp(self):
        return 1


@lru_cache(maxsize=4096)
def _signed_csrf(secret_key, token):
    """A session's CSRF token signed as Flask-WTF signs it, but the same in every worker."""
    return URLSafeTimedSerializer(secret_key, salt="wtf-csrf-token", signer=_OneTimeSigner).dumps(token)


def _signed_once():
    """Whether tokens are signed once per session: Flask-WTF signs a token with the time, to refuse
    old ones, so only tokens that never expire (`WTF_CSRF_TIME_LIMIT` None, the default) can reuse
    their signature."""
    config = current_app.config
    return config["WTF_CSRF_TIME_LIMIT"] is None and "WTF_CSRF_SECRET_KEY" not in config


def csrf_token():
    """Flask-WTF's CSRF token for forms, signed once per session rather than once per request."""
    signed = g.get(CSRF_KEY)
    if signed is None and _signed_once():
        if CSRF_KEY not in session:
            generate_csrf()  # Flask-WTF makes the session's token
        signed = _signed_csrf(current_app.secret_key, session[CSRF_KEY])
        setattr(g, CSRF_KEY, signed)  # where Flask-WTF looks for this request's token
    return signed or generate_csrf()


def is_issued_csrf_token(signed):
    """Whether `signed` is the very token `csrf_token` gives this session's forms: Flask-WTF would
    accept it, so checking its signature again would only repeat the signing."""
    if not signed or not _signed_once() or session_unavailable() or CSRF_KEY not in session:
        return False
    return hmac.compare_digest(signed, _signed_csrf(current_app.secret_key, session[CSRF_KEY]))


def init_app(app, store):
    """Serve the app's sessions from `store` (`webapp/stores.py` chooses it), and give templates the
    CSRF token signed once per session."""
    app.session_interface = Sessions(store, app.config["SESSION_REFRESH_AFTER"])
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.context_processor(lambda: {"csrf_token": csrf_token})  # after Flask-WTF's, which it replaces
    return app.session_interface

