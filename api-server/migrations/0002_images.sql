-- Images (Glance v2 compatible, served by nimbus-image) and image members
-- for shared images.  Owners and members are project ids.  Custom
-- properties are a JSON object of strings; tags a text array.
-- 'upload_token' names the upload in progress while status is 'saving', so
-- that only that upload can finish it and a concurrent one gets 409.

CREATE TABLE images (
    id               uuid PRIMARY KEY,
    name             text CHECK (length(name) <= 255),
    owner            text NOT NULL,
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'saving', 'active', 'killed',
                                       'deactivated', 'pending_delete', 'deleted')),
    visibility       text NOT NULL DEFAULT 'shared'
                     CHECK (visibility IN ('private', 'shared', 'community', 'public')),
    protected        boolean NOT NULL DEFAULT false,
    os_hidden        boolean NOT NULL DEFAULT false,
    disk_format      text,
    container_format text,
    min_disk         integer NOT NULL DEFAULT 0 CHECK (min_disk >= 0),
    min_ram          integer NOT NULL DEFAULT 0 CHECK (min_ram >= 0),
    size             bigint,
    virtual_size     bigint,
    checksum         text,
    os_hash_algo     text,
    os_hash_value    text,
    tags             text[] NOT NULL DEFAULT '{}',
    properties       jsonb NOT NULL DEFAULT '{}',
    upload_token     text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX images_owner ON images (owner);
CREATE INDEX images_visibility ON images (visibility) WHERE visibility IN ('public', 'community');
CREATE INDEX images_created ON images (created_at, id);

CREATE TABLE image_members (
    image_id   uuid NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    member_id  text NOT NULL,
    status     text NOT NULL DEFAULT 'pending'
               CHECK (status IN ('pending', 'accepted', 'rejected')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (image_id, member_id)
);
CREATE INDEX image_members_member ON image_members (member_id);
