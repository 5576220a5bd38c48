-- The category a notice was published with, kept as it was: the figures count notices
-- published by it, so that amending a notice later never changes a month already published.
-- Notices published before this column take their category as it is now.
ALTER TABLE notices ADD COLUMN published_category TEXT NOT NULL DEFAULT '';
UPDATE notices SET published_category = category;
