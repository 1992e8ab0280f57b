-- depends: 0012_text
-- The video transform (docs/transforms.md; seed 002: HLS streaming): the poster frame's
-- thumbnails and the HLS rendition the video stage made of a version, or why it could not.
-- Written only by the commit stage (file.video_processed, file.video_failed); the playlists,
-- segments and poster thumbnails are objects beside the original (`<original key>.hls/…`,
-- `<original key>.poster-<size>.webp|jpg`). Additive: a new table only.
CREATE TABLE file_videos (
    file_id        uuid        NOT NULL REFERENCES files (file_id) ON DELETE CASCADE,
    version_number integer     NOT NULL CHECK (version_number >= 1),
    owner          text        NOT NULL,
    state          text        NOT NULL CHECK (state IN ('processed', 'failed')),
    master_key     text,
    duration_s     double precision CHECK (duration_s >= 0),
    width          integer     CHECK (width >= 1),
    height         integer     CHECK (height >= 1),
    video_codec    text,
    has_audio      boolean,
    segment_s      integer     CHECK (segment_s >= 1),
    -- [{name, playlist_key, width, height, bandwidth, segments}], smallest first.
    renditions     jsonb       NOT NULL DEFAULT '[]'::jsonb,
    -- [{size_px, key, width, height, size_bytes, content_type}], as files' thumbnails.
    poster         jsonb       NOT NULL DEFAULT '[]'::jsonb,
    error          text,
    event_id       uuid        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    PRIMARY KEY (file_id, version_number)
);
CREATE INDEX file_videos_owner ON file_videos (owner);
