-- Subscriptions that cross an ICS border (JSON; NULL for every other). At the answering broker:
-- `{"relayed_by": {...}}`, a partner of the peer broker subscribed through it, and its events
-- are pushed to that broker. At the asking broker: `{"at_peer": {...}}`, the subscription is
-- held at the peer (which decides every event) and its events are passed on as they arrive;
-- nothing is fanned out here.
ALTER TABLE subscriptions ADD COLUMN federation TEXT;
