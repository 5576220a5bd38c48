DROP TABLE disclosure_fanout_state;
DROP TABLE subscription_dead_letters;
DROP TABLE subscription_notice_seen;
DROP TABLE subscription_events;
DROP TABLE notice_events;
DROP TABLE subscription_cohort;
DROP TABLE subscription_counters;
DROP TABLE subscriptions;
