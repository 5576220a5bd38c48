//! Background work beside the server. Safe to run on several replicas at once: each step
//! moves a notice only from the version it read.

use std::time::Duration;

use crate::AppState;

/// Expires active notices whose review date has passed, every `every`.
pub async fn expire_notices(state: AppState, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let store = state.store.clone();
        let now = state.clock.now();
        let result = tokio::task::spawn_blocking(move || store.expire_due(now.date_naive(), now)).await;
        match result {
            Ok(Ok(expired)) => {
                if !expired.is_empty() {
                    state.outbox.changed();
                }
                for n in &expired {
                    state.metrics.notice_changes.with_label_values(&[n.version.change.code()]).inc();
                    tracing::info!(notice_id = %n.id, review_date = %n.content.review_date, "notice expired");
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "expiry sweep failed; will retry"),
            Err(e) => tracing::error!(error = %e, "expiry sweep panicked"),
        }
    }
}

/// Seals committed audit entries into the Merkle tree and signs a checkpoint, every `every`
/// while entries arrive. Safe on several replicas (the store takes a lock).
pub async fn seal_audit(state: AppState, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let st = state.clone();
        let now = state.clock.now();
        let result = tokio::task::spawn_blocking(move || {
            let keys = st.tokens.keys();
            let sign = |size: i64, root: &[u8; 32], at: chrono::DateTime<chrono::Utc>| {
                keys.sign_checkpoint(size, &vpr_audit::hex(root), &at.to_rfc3339()).map_err(|e| e.to_string())
            };
            // Keep sealing until caught up, in bounded batches.
            let mut last = None;
            while let Some(cp) = st.store.seal_pending(10_000, now, &sign)? {
                last = Some(cp);
            }
            Ok::<_, vpr_store::StoreError>(last)
        })
        .await;
        match result {
            Ok(Ok(Some(cp))) => {
                tracing::debug!(tree_size = cp.tree_size, root = %cp.root_hash, "audit checkpoint signed")
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "audit sealing failed; will retry"),
            Err(e) => tracing::error!(error = %e, "audit sealing panicked"),
        }
    }
}

/// Retention, every `every`: removes the content of audit entries older than the agreement's
/// audit retention period, keeping their seals (so the log still verifies), and records each
/// prune as an audit entry of its own. Withdrawn and expired notices keep their audit: only age
/// under the agreement removes it.
pub async fn retain_audit(state: AppState, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let st = state.clone();
        let now = state.clock.now();
        let years = state.agreement.audit_retention_years;
        let result = tokio::task::spawn_blocking(move || {
            let Some(cutoff) = now.checked_sub_months(chrono::Months::new(years.saturating_mul(12))) else {
                return Ok(0);
            };
            let version = st.agreement.version.clone();
            let entry = |pruned: usize| vpr_store::audit::AuditEntry {
                id: uuid::Uuid::new_v4(),
                at: now,
                request_id: String::new(),
                action: vpr_domain::audit::AuditAction::AuditRetention.into(),
                actor_org: "vpr-broker".into(),
                actor_org_type: "broker".into(),
                actor_system: "vpr-broker".into(),
                actor_user: None,
                actor_role: None,
                purpose: Some("vpr-management".into()),
                context_ref: Some(format!("pruned={pruned};before={};retention_years={years}", cutoff.to_rfc3339())),
                break_glass: false,
                justification: None,
                subject_refs: vec![],
                decision: "permit".into(),
                notices: vec![],
                lawful_basis: vec![],
                clauses: vec![],
                agreement_version: version,
                outcome: 200,
                ig_review: None,
                received_by: None,
            };
            let pruned = st.store.prune_audit(cutoff, now, entry)?;
            Ok::<_, vpr_store::StoreError>(pruned)
        })
        .await;
        match result {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(pruned = n, "audit entries past retention pruned (seals kept)"),
            Ok(Err(e)) => tracing::warn!(error = %e, "audit retention failed; will retry"),
            Err(e) => tracing::error!(error = %e, "audit retention panicked"),
        }
    }
}
