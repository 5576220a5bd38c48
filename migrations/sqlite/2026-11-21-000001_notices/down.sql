DROP TABLE assertion_jtis;
DROP TABLE idempotency_keys;
DROP TABLE notice_match_keys;
DROP TABLE notice_versions;
DROP TABLE notices;
