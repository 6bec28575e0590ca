-- Interoperable image import (glance-direct): PUT /v2/images/{id}/stage
-- puts an image in 'uploading' (the data is staged, with 'upload_token'
-- naming the stage in progress, NULL once the data is complete); POST
-- /v2/images/{id}/import moves it through 'importing' to 'active'
-- (docs/image.md).
ALTER TABLE images DROP CONSTRAINT images_status_check;
ALTER TABLE images ADD CONSTRAINT images_status_check
    CHECK (status IN ('queued', 'saving', 'uploading', 'importing', 'active', 'killed',
                      'deactivated', 'pending_delete', 'deleted'));
