//! The periodic jobs.

use std::time::Duration;

use vpr_domain::audit::AuditAction;
use vpr_store::audit::AuditEntry;

use super::periodic;
use crate::audit::{audit_entry, Actor, MANAGEMENT_PURPOSE};
use crate::stop::Stop;
use crate::App;

/// The broker itself, as the actor of the entries its own jobs write.
const BROKER: Actor<'static> = Actor { org: "vpr-broker", org_type: "broker", system: "vpr-broker" };

/// Expires active notices whose review date has passed.
pub async fn expire_notices(app: App, every: Duration, stop: Stop) {
    let job = |app: &App| {
        let now = app.clock.now();
        Ok(app.store.expire_due(now.date_naive(), now)?)
    };
    periodic(app, "expire-notices", every, stop, job, |app, expired| {
        if !expired.is_empty() {
            app.outbox.changed();
        }
        for n in &expired {
            app.metrics.notice_changes.with_label_values(&[n.version.change.code()]).inc();
            tracing::info!(notice_id = %n.id, review_date = %n.content.review_date, "notice expired");
        }
    })
    .await;
}

/// Seals committed audit entries into the Merkle tree and signs a checkpoint, while entries
/// arrive (the store takes a lock, so replicas take turns).
pub async fn seal_audit(app: App, every: Duration, stop: Stop) {
    let job = |app: &App| {
        let now = app.clock.now();
        let keys = app.tokens.keys();
        let sign = |size: i64, root: &[u8; 32], at: chrono::DateTime<chrono::Utc>| {
            keys.sign_checkpoint(size, &vpr_audit::hex(root), &at.to_rfc3339()).map_err(|e| e.to_string())
        };
        // Keep sealing until caught up, in bounded batches.
        let mut last = None;
        while let Some(cp) = app.store.seal_pending(10_000, now, &sign)? {
            last = Some(cp);
        }
        Ok(last)
    };
    periodic(app, "seal-audit", every, stop, job, |_, last| {
        if let Some(cp) = last {
            tracing::debug!(tree_size = cp.tree_size, root = %cp.root_hash, "audit checkpoint signed");
        }
    })
    .await;
}

/// Retention: removes the content of audit entries older than the agreement's retention period,
/// keeping their seals (so the log still verifies), and records each prune in an entry of its
/// own. Withdrawn and expired notices keep their audit: only age under the agreement removes it.
pub async fn retain_audit(app: App, every: Duration, stop: Stop) {
    let job = |app: &App| {
        let now = app.clock.now();
        let years = app.agreement.audit_retention_years;
        let Some(cutoff) = now.checked_sub_months(chrono::Months::new(years.saturating_mul(12))) else {
            return Ok(0);
        };
        // The prune and its own entry commit together.
        let record = |pruned: usize| AuditEntry {
            purpose: Some(MANAGEMENT_PURPOSE.into()),
            context_ref: Some(format!("pruned={pruned};before={};retention_years={years}", cutoff.to_rfc3339())),
            decision: "permit".into(),
            ..audit_entry(app, BROKER, "", AuditAction::AuditRetention, 200)
        };
        let pruned = app.store.prune_audit(cutoff, now, record)?;
        Ok(pruned)
    };
    periodic(app, "retain-audit", every, stop, job, |_, pruned| {
        if pruned > 0 {
            tracing::info!(pruned, "audit entries past retention pruned (seals kept)");
        }
    })
    .await;
}

/// Marks subscriptions past their end as expired.
pub async fn expire_subscriptions(app: App, every: Duration, stop: Stop) {
    let job = |app: &App| Ok(app.store.expire_subscriptions(app.clock.now())?);
    periodic(app, "expire-subscriptions", every, stop, job, |_, n| {
        if n > 0 {
            tracing::info!(expired = n, "subscriptions past their expiry");
        }
    })
    .await;
}
