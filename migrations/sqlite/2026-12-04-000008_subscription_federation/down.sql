ALTER TABLE subscriptions DROP COLUMN federation;
