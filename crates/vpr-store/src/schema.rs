//! Diesel table definitions, shared by both backends (types valid on SQLite and PostgreSQL).

diesel::table! {
    notices (id) {
        id -> Text,
        publisher_ods -> Text,
        status -> Text,
        current_version -> BigInt,
        category -> Text,
        risk_level -> Text,
        medical_factor_operative -> Bool,
        review_date -> Date,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        published_category -> Text,
    }
}

diesel::table! {
    notice_versions (notice_id, version) {
        notice_id -> Text,
        version -> BigInt,
        change_kind -> Text,
        status -> Text,
        content -> Binary,
        reason -> Nullable<Binary>,
        by_system -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    notice_match_keys (blind_index, notice_id) {
        blind_index -> Text,
        notice_id -> Text,
        kind -> Text,
    }
}

diesel::table! {
    idempotency_keys (org_ods, idempotency_key) {
        org_ods -> Text,
        idempotency_key -> Text,
        request_hash -> Text,
        notice_id -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    assertion_jtis (client_id, jti) {
        client_id -> Text,
        jti -> Text,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    audit_notice_refs (notice_id, audit_id) {
        notice_id -> Text,
        audit_id -> Text,
        disclosed -> Bool,
    }
}

diesel::joinable!(notice_versions -> notices (notice_id));
diesel::joinable!(notice_match_keys -> notices (notice_id));
diesel::allow_tables_to_appear_in_same_query!(
    notices,
    notice_versions,
    notice_match_keys,
    idempotency_keys,
    assertion_jtis,
    audit_entries,
    audit_notice_refs,
    audit_subject_refs
);

diesel::table! {
    subject_directives (record_id, blind_index) {
        record_id -> Text,
        blind_index -> Text,
        kind -> Text,
        purpose -> Text,
        status -> Text,
        evidence_reference -> Text,
        reason -> Nullable<Binary>,
        effective_from -> Date,
        expires_on -> Nullable<Date>,
        recorded_at -> Timestamp,
        recorded_by_org -> Text,
        recorded_by_user -> Text,
    }
}

diesel::table! {
    audit_entries (seq) {
        seq -> BigInt,
        id -> Text,
        at -> Timestamp,
        request_id -> Text,
        action -> Text,
        actor_org -> Text,
        actor_org_type -> Text,
        actor_system -> Text,
        actor_user -> Nullable<Text>,
        actor_role -> Nullable<Text>,
        purpose -> Nullable<Text>,
        context_ref -> Nullable<Text>,
        break_glass -> Bool,
        justification -> Nullable<Binary>,
        subject_refs -> Text,
        decision -> Text,
        notices -> Text,
        lawful_basis -> Text,
        clauses -> Text,
        agreement_version -> Text,
        outcome -> Integer,
        ig_review -> Nullable<Text>,
        leaf_index -> Nullable<BigInt>,
        leaf_hash -> Nullable<Text>,
        pruned_at -> Nullable<Timestamp>,
        federation -> Nullable<Text>,
    }
}

diesel::table! {
    audit_subject_refs (subject_ref, audit_id) {
        subject_ref -> Text,
        audit_id -> Text,
    }
}

diesel::table! {
    audit_checkpoints (tree_size) {
        tree_size -> BigInt,
        root_hash -> Text,
        signed_at -> Timestamp,
        jws -> Text,
    }
}

diesel::table! {
    audit_seal_state (id) {
        id -> Integer,
        tree_size -> BigInt,
        frontier -> Text,
    }
}

diesel::table! {
    subscriptions (id) {
        id -> Text,
        owner_ods -> Text,
        owner_system -> Text,
        status -> Text,
        purpose -> Text,
        role -> Text,
        context_ref -> Nullable<Text>,
        criteria -> Text,
        payload -> Text,
        channel -> Text,
        method -> Text,
        endpoint -> Nullable<Text>,
        encryption_jwk -> Nullable<Text>,
        tag -> Nullable<Text>,
        expires_at -> Timestamp,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        approval -> Text,
        topic -> Text,
        heartbeat_seconds -> Nullable<Integer>,
        last_heartbeat_at -> Nullable<Timestamp>,
        delivered_upto -> BigInt,
        delivery_state -> Text,
        attempts -> Integer,
        failing_since -> Nullable<Timestamp>,
        next_attempt_at -> Timestamp,
        last_attempt_at -> Nullable<Timestamp>,
        last_delivered_at -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        lease_owner -> Nullable<Text>,
        lease_until -> Nullable<Timestamp>,
        federation -> Nullable<Text>,
    }
}

diesel::table! {
    subscription_cohort (subscription_id, blind_index) {
        subscription_id -> Text,
        blind_index -> Text,
    }
}

diesel::table! {
    notice_events (seq) {
        seq -> BigInt,
        notice_id -> Text,
        version -> BigInt,
        kind -> Text,
        at -> Timestamp,
        fanned_out_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    subscription_events (subscription_id, event_number) {
        subscription_id -> Text,
        event_number -> BigInt,
        event_id -> Text,
        notice_id -> Text,
        notice_version -> BigInt,
        kind -> Text,
        occurred_at -> Timestamp,
        matched -> Bool,
        audit_id -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    subscription_notice_seen (subscription_id, notice_id) {
        subscription_id -> Text,
        notice_id -> Text,
    }
}

diesel::table! {
    subscription_dead_letters (subscription_id, event_number, dead_at) {
        subscription_id -> Text,
        event_number -> BigInt,
        dead_at -> Timestamp,
        attempts -> Integer,
        last_error -> Text,
        resolved_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    subscription_counters (subscription_id) {
        subscription_id -> Text,
        last_event_number -> BigInt,
    }
}

diesel::joinable!(subscription_counters -> subscriptions (subscription_id));
diesel::allow_tables_to_appear_in_same_query!(
    subscriptions,
    subscription_counters,
    subscription_cohort,
    subscription_events,
    notice_events
);

diesel::table! {
    disclosure_fanout_state (id) {
        id -> Integer,
        after_leaf -> BigInt,
    }
}

diesel::table! {
    figure_counts (month, org, category, purpose) {
        month -> Text,
        org -> Text,
        category -> Text,
        purpose -> Text,
        n -> BigInt,
    }
}
