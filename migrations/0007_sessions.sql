-- Dashboard sign-in sessions, in the database so that every collector on it shares them: a
-- restarted collector, or another one behind a load balancer, keeps its users signed in, and
-- signing out ends the session everywhere. Only a SHA-256 of each token is kept, so reading
-- this table (a replica, a backup) does not let anyone sign in. The role is not kept: it is
-- read from the config at every request, so removing or demoting a user takes effect at once.
CREATE TABLE sw_sessions (
    token_sha256 bytea       PRIMARY KEY,
    user_name    text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX sw_sessions_expires ON sw_sessions (expires_at);
