//! Changes to a subscription after it is made: its cohort, IG's approval decisions, and
//! redelivery of what a webhook missed.

use serde_json::{json, Value};
use uuid::Uuid;
use vpr_domain::audit::AuditAction;
use vpr_domain::subscription::{DeliveryMethod, SubscriptionStatus};
use vpr_store::audit::AuditEntry;
use vpr_store::subscriptions::{DeadLetter, Subscription};

use super::Facade;
use crate::access::ig_only;
use crate::audit::{caller_entry, record_refusal, MANAGEMENT_PURPOSE};
use crate::caller::Caller;
use crate::disclose::subject_keys;
use crate::error::{AppError, AppResult};
use crate::App;

impl App {
    /// Adds subjects to and removes them from an owned subscription's cohort; audited (as
    /// `subscription-cohort`) with the change. Returns the cohort's new size.
    pub async fn change_cohort(&self, caller: &Caller, id: Uuid, body: Value) -> AppResult<i64> {
        let change = vpr_domain::subscription::cohort_change(&body).map_err(AppError::Validation)?;
        let sub = self.owned_subscription(caller, id, Facade::Vpr).await?;
        super::held_here(&sub)?;
        if !sub.criteria.cohort {
            return Err(AppError::Conflict(
                "this subscription has no cohort: give `criteria.cohort` with PUT first".into(),
            ));
        }
        if !sub.status.replaceable() {
            return Err(AppError::Conflict(format!("a subscription that is `{}` cannot be changed", sub.status)));
        }
        let keys = |subjects: &[vpr_domain::notice::Subject]| -> Vec<String> {
            subjects.iter().flat_map(|s| subject_keys(self, s).0).collect()
        };
        let (add, remove) = (keys(&change.add), keys(&change.remove));
        let caller = caller.clone();
        self.blocking(move |app| {
            // The change and its entry commit together.
            app.store.audited(|tx| {
                let size = tx.change_cohort(id, &add, &remove)?;
                let entry = AuditEntry {
                    actor_role: Some(sub.role.clone()),
                    purpose: Some(sub.purpose.clone()),
                    context_ref: Some(format!(
                        "subscription={id};added={};removed={};size={size}",
                        add.len(),
                        remove.len()
                    )),
                    decision: "permit".into(),
                    ..caller_entry(app, &caller, AuditAction::SubscriptionCohort, 200)
                };
                Ok::<_, AppError>((size, entry))
            })
        })
        .await
    }

    /// IG decides on a subscription: approve or reject one awaiting approval, or revoke an
    /// active one. A caller not in an IG role is refused and audited; the decision and its
    /// entry commit together.
    pub async fn decide_approval(&self, caller: &Caller, id: Uuid, body: Value) -> AppResult<Subscription> {
        let input = vpr_domain::subscription::approval(&body).map_err(AppError::Validation)?;
        let caller = caller.clone();
        let sub = self
            .blocking(move |app| {
                ig_only(app, &caller.principal, &input.reviewer.role, "deciding on subscriptions")
                    .map_err(|refusal| record_refusal(app, &caller, AuditAction::SubscriptionApproval, refusal))?;
                app.store.audited(|tx| approve(app, tx, &caller, id, &input))
            })
            .await?;
        self.outbox.changed();
        if let Some(vpr_domain::subscription::PeerLink::RelayedBy { .. }) = &sub.federation {
            // The partner's broker is told (best effort; a later push carries the status too).
            self.report_status_to_peer(&sub);
        }
        Ok(sub)
    }

    /// An owned subscription's dead letters, newest first.
    pub async fn dead_letters(&self, caller: &Caller, id: Uuid) -> AppResult<(Subscription, Vec<DeadLetter>)> {
        let sub = self.owned_subscription(caller, id, Facade::Vpr).await?;
        let items = self.blocking(move |app| Ok(app.store.dead_letters(id)?)).await?;
        Ok((sub, items))
    }

    /// Resumes a suspended webhook subscription from its first undelivered event, or replays
    /// from `from_event` (each event decided and audited again when sent).
    pub async fn redeliver(&self, caller: &Caller, id: Uuid, body: Value) -> AppResult<Subscription> {
        let input = vpr_domain::subscription::redeliver(&body).map_err(AppError::Validation)?;
        let sub = self.owned_subscription(caller, id, Facade::Vpr).await?;
        if let Some(vpr_domain::subscription::PeerLink::AtPeer { peer, subscription_id }) = &sub.federation {
            // The peer holds its events: it is asked to resume or replay them.
            return self.redeliver_at_peer(caller, &sub, peer, subscription_id, input.from_event).await;
        }
        if sub.method != DeliveryMethod::Webhook {
            return Err(AppError::Conflict(
                "a feed subscription is replayed by reading its feed from any `after`".into(),
            ));
        }
        if !sub.status.receives() {
            return Err(AppError::Conflict(format!("a subscription that is `{}` is not delivered", sub.status)));
        }
        let sub = self
            .blocking(move |app| {
                if !app.store.redeliver(id, input.from_event, app.clock.now())? {
                    return Err(AppError::invalid(
                        "/from_event",
                        "beyond-last-event",
                        "there is no event with this number yet",
                    ));
                }
                app.store.subscription(id)?.ok_or_else(|| AppError::NotFound("no subscription has this id".into()))
            })
            .await?;
        self.outbox.due();
        Ok(sub)
    }
}

/// An IG decision on a subscription, in the transaction that records it.
fn approve(
    app: &App,
    tx: &mut vpr_store::Tx<'_>,
    caller: &Caller,
    id: Uuid,
    input: &vpr_domain::subscription::ApprovalInput,
) -> AppResult<(Subscription, AuditEntry)> {
    let (from, to): (&[SubscriptionStatus], SubscriptionStatus) = match input.decision.as_str() {
        "approve" => (&[SubscriptionStatus::Pending], SubscriptionStatus::Active),
        "reject" => (&[SubscriptionStatus::Pending], SubscriptionStatus::Rejected),
        _ => (SubscriptionStatus::REVOCABLE, SubscriptionStatus::Revoked),
    };
    let now = app.clock.now();
    let current = tx.subscription(id)?.ok_or_else(|| AppError::NotFound("no subscription has this id".into()))?;
    if let Some(vpr_domain::subscription::PeerLink::AtPeer { peer, .. }) = &current.federation {
        return Err(AppError::Conflict(format!(
            "this subscription is held at peer broker `{peer}`, whose agreement and IG leads decide it"
        )));
    }
    let record = json!({
        "decided_by": "ig", "decision": input.decision, "note": input.note.trim(),
        "reviewer": {"organisation": caller.org(), "user_id": input.reviewer.user_id, "role": input.reviewer.role},
        "agreement_version": app.agreement.version, "at": now, "previous": current.approval,
    });
    let sub = tx.set_subscription_status(id, from, to, Some(&record), now)?.ok_or_else(|| {
        AppError::Conflict(format!("a subscription that is `{}` cannot be given `{}`", current.status, input.decision))
    })?;
    let audit = AuditEntry {
        actor_user: Some(input.reviewer.user_id.clone()),
        actor_role: Some(input.reviewer.role.clone()),
        purpose: Some(MANAGEMENT_PURPOSE.into()),
        context_ref: Some(format!("subscription={id};decision={};owner={}", input.decision, sub.owner_ods)),
        decision: to.code().to_owned(),
        ..caller_entry(app, caller, AuditAction::SubscriptionApproval, 200)
    };
    Ok((sub, audit))
}
