-- Versions of services (`service.version` of the resources apps send), as agents report them:
-- the first time each instance was seen running each version. A version new to its service
-- is a change event (store/src/versions.rs): on incident timelines and among the causes.
CREATE TABLE sw_service_versions (
    service     text        NOT NULL,
    instance    text        NOT NULL,
    version     text        NOT NULL,
    environment text        NOT NULL DEFAULT '',
    first_seen  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    PRIMARY KEY (service, instance, version)
);
CREATE INDEX sw_service_versions_first_seen ON sw_service_versions (first_seen);
