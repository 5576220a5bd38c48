//! What an audit entry records the broker doing: every action code the broker writes.

use crate::vocab::vocabulary;

vocabulary! {
    /// The action an audit entry records, stored as its code.
    AuditAction {
        /// A look-up by subject identifiers.
        Lookup = "lookup",
        /// A look-up by a partner of a neighbouring ICS, relayed by its broker (a peer).
        RelayedLookup = "relayed-lookup",
        /// A read of one notice.
        Read = "read",
        /// A FHIR `Flag` search.
        FhirSearch = "fhir-search",
        /// A FHIR `Flag` read.
        FhirRead = "fhir-read",
        /// A feed subscription's events read.
        Feed = "feed",
        /// A FHIR subscription's `$events` read.
        FhirEvents = "fhir-events",
        /// A webhook delivery decided.
        Deliver = "deliver",
        /// An event a peer broker decided and pushed, passed on to the subscriber's webhook.
        PeerEvent = "peer-event",
        /// A publisher's access log of one notice read.
        AccessLog = "access-log",
        /// A publisher's feed of decisions on its notices read (also: a feed's `disclosed` events).
        AccessLogFeed = "access-log-feed",
        /// `disclosed` events pushed to a webhook.
        AccessLogPush = "access-log-push",
        /// `disclosed` events read through FHIR `$events`.
        AccessLogFhirEvents = "access-log-fhir-events",
        /// A consent recorded.
        Consent = "consent",
        /// An objection recorded.
        Objection = "objection",
        /// A subscription created.
        Subscribe = "subscribe",
        /// A subscription replaced by its owner.
        SubscriptionChange = "subscription-change",
        /// A subscription's cohort changed.
        SubscriptionCohort = "subscription-cohort",
        /// A subscription deleted by its owner.
        Unsubscribe = "unsubscribe",
        /// A subscription approved, rejected or revoked by IG.
        SubscriptionApproval = "subscription-approval",
        /// Every organisation's subscriptions listed by IG.
        SubscriptionsList = "subscriptions-list",
        /// The break-glass review queue read.
        BreakGlassQueue = "break-glass-queue",
        /// A break-glass access reviewed.
        BreakGlassReview = "break-glass-review",
        /// The audit log searched.
        AuditSearch = "audit-search",
        /// The audit log exported (CSV).
        AuditExport = "audit-export",
        /// The daily audit summary read.
        AuditSummary = "audit-summary",
        /// A subject access report made.
        SubjectAccessReport = "subject-access-report",
        /// Audit entries exported as FHIR `AuditEvent`s.
        AuditEventExport = "audit-event-export",
        /// Audit entries pruned under retention.
        AuditRetention = "audit-retention",
        /// A person signed in to the console (or was refused).
        ConsoleSignIn = "console-sign-in",
        /// A person signed out of the console.
        ConsoleSignOut = "console-sign-out",
        /// The figures (notices and disclosures per partner, category, purpose and month, small
        /// numbers suppressed) were read.
        Statistics = "statistics",
        /// A publisher's notices due for review, and its expired ones, were listed.
        NoticesDue = "notices-due",
        /// One audit entry was shown with its inclusion proof.
        AuditEntryRead = "audit-entry",
        /// The log's latest checkpoints were shown, checked for consistency.
        LogIntegrity = "log-integrity",
        /// Consents and objections were listed.
        DirectivesList = "directives-list",
    }
}

impl From<AuditAction> for String {
    fn from(a: AuditAction) -> Self {
        a.code().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_code_reads_back_and_serialises_as_its_code() {
        for a in AuditAction::ALL {
            assert_eq!(AuditAction::from_code(a.code()), Some(*a));
            assert_eq!(serde_json::to_value(a).ok(), Some(serde_json::Value::String(a.code().to_owned())));
            assert_eq!(a.to_string(), a.code());
        }
        assert_eq!(AuditAction::from_code("subscription-cohort"), Some(AuditAction::SubscriptionCohort));
        assert_eq!(AuditAction::from_code("no-such-action"), None);
    }
}
