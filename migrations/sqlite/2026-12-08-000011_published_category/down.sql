ALTER TABLE notices DROP COLUMN published_category;
