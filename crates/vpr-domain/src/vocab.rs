//! Controlled vocabularies, from the ambulance trust's violence and aggression procedure (seed 004)
//! and the lawful-basis catalogue in DOMAIN.md. The JSON Schemas list the same codes; a test keeps
//! them in step.

macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $code:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $code)] $variant),+
        }

        impl $name {
            /// Every code, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire code.
            pub fn code(self) -> &'static str {
                match self { $($name::$variant => $code),+ }
            }

            /// Looks a wire code up.
            pub fn from_code(code: &str) -> Option<Self> {
                match code { $($code => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.code())
            }
        }
    };
}
pub(crate) use vocabulary;

vocabulary! {
    /// Violence and aggression sub-categories (seed 004, appendix parts 1 and 2).
    Category {
        /// Aggression seen, not directed at staff.
        WitnessedAggression = "witnessed-aggression",
        /// Directed at staff to intimidate, causing distress or discomfort.
        AntiSocialBehaviour = "anti-social-behaviour",
        /// Words meant to insult or degrade.
        DirectedVerbalAbuse = "directed-verbal-abuse",
        /// A credible threat with belief of imminent harm.
        NonPhysicalAssault = "non-physical-assault",
        /// Force aimed at staff that missed.
        AttemptedPhysicalAssault = "attempted-physical-assault",
        /// Intentional or reckless force.
        PhysicalAssault = "physical-assault",
        /// Other serious: a credible threat to an individual.
        CredibleThreatToIndividual = "credible-threat-to-individual",
        /// Other serious: false imprisonment, e.g. blocking the exit.
        FalseImprisonment = "false-imprisonment",
        /// Other serious: a threat with a weapon.
        ThreatWithWeapon = "threat-with-weapon",
    }
}

vocabulary! {
    /// Aggravating factors, counted only if operative immediately before, during or after the act.
    AggravatingFactor {
        /// Sexual.
        Sexual = "sexual",
        /// Racial or religious.
        RacialOrReligious = "racial-or-religious",
        /// Homophobic.
        Homophobic = "homophobic",
        /// Transphobic.
        Transphobic = "transphobic",
        /// Disability.
        Disability = "disability",
    }
}

vocabulary! {
    /// Assessed risk to staff.
    RiskLevel {
        /// Low.
        Low = "low",
        /// Moderate.
        Moderate = "moderate",
        /// High.
        High = "high",
    }
}

vocabulary! {
    /// Safety advice for staff attending the subject.
    SafetyAdvice {
        /// Attend only with police.
        AttendWithPolice = "attend-with-police",
        /// At least two staff.
        TwoStaffMinimum = "two-staff-minimum",
        /// No lone visits.
        NoLoneVisits = "no-lone-visits",
        /// Telephone before attending.
        TelephoneFirst = "telephone-first",
        /// Weapons have been reported.
        WeaponsReported = "weapons-reported",
        /// A dangerous animal is kept.
        DangerousAnimal = "dangerous-animal",
        /// See in a clinical setting only.
        ClinicalSettingOnly = "clinical-setting-only",
        /// Security staff should be present.
        SecurityPresent = "security-present",
    }
}

vocabulary! {
    /// Lifecycle status of a notice.
    NoticeStatus {
        /// In force.
        Active = "active",
        /// Withdrawn by its publisher.
        Withdrawn = "withdrawn",
        /// Passed its review date without review.
        Expired = "expired",
        /// Published by mistake.
        EnteredInError = "entered-in-error",
    }
}

vocabulary! {
    /// Lawful-basis codes (DOMAIN.md).
    LawfulBasis {
        /// UK GDPR Art 6(1)(c) legal obligation.
        Ukgdpr6_1C = "UKGDPR-6-1-c",
        /// UK GDPR Art 6(1)(d) vital interests.
        Ukgdpr6_1D = "UKGDPR-6-1-d",
        /// UK GDPR Art 6(1)(e) public task.
        Ukgdpr6_1E = "UKGDPR-6-1-e",
        /// UK GDPR Art 9(2)(h) health or social care.
        Ukgdpr9_2H = "UKGDPR-9-2-h",
        /// UK GDPR Art 9(2)(g) substantial public interest.
        Ukgdpr9_2G = "UKGDPR-9-2-g",
        /// DPA 2018 Sch 1 para 6 statutory and government purposes.
        Dpa18S1P6 = "DPA18-S1-P6",
        /// DPA 2018 Sch 1 para 10 preventing or detecting unlawful acts.
        Dpa18S1P10 = "DPA18-S1-P10",
        /// DPA 2018 Sch 1 para 11 protecting the public.
        Dpa18S1P11 = "DPA18-S1-P11",
        /// DPA 2018 Sch 1 para 18 safeguarding.
        Dpa18S1P18 = "DPA18-S1-P18",
        /// UK GDPR Art 10 criminal offence data.
        Ukgdpr10 = "UKGDPR-10",
        /// DPA 2018 Part 3 law-enforcement processing.
        Dpa18Part3 = "DPA18-PART3",
        /// Crime and Disorder Act 1998 s115 power to disclose.
        Cda98S115 = "CDA98-S115",
        /// Crime and Disorder Act 1998 s17A duty to share.
        Cda98S17a = "CDA98-S17A",
        /// Health and Social Care Act 2012 s251B duty to share for direct care.
        Hsca12S251b = "HSCA12-S251B",
        /// Common-law duty of confidentiality: consent.
        CldcConsent = "CLDC-CONSENT",
        /// Common-law duty of confidentiality: overriding public interest.
        CldcPublicInterest = "CLDC-PUBLIC-INTEREST",
        /// Common-law duty of confidentiality: legal requirement.
        CldcLegal = "CLDC-LEGAL",
    }
}

vocabulary! {
    /// Kinds of partner organisation in the ICS.
    OrgType {
        /// Acute hospital trust.
        AcuteTrust = "acute-trust",
        /// Ambulance trust.
        AmbulanceTrust = "ambulance-trust",
        /// GP practice.
        GpPractice = "gp-practice",
        /// Mental health trust.
        MentalHealthTrust = "mental-health-trust",
        /// Community health provider.
        CommunityProvider = "community-provider",
        /// Police force.
        PoliceForce = "police-force",
        /// Local authority.
        LocalAuthority = "local-authority",
        /// Integrated care board.
        Icb = "icb",
    }
}

vocabulary! {
    /// What happened to a notice to make a new version.
    ChangeKind {
        /// First publication.
        Created = "created",
        /// Content amended by the publisher.
        Amended = "amended",
        /// Reviewed and re-applied with a new review date.
        Reviewed = "reviewed",
        /// Withdrawn by the publisher.
        Withdrawn = "withdrawn",
        /// Marked as published in error.
        EnteredInError = "entered-in-error",
        /// Expired by the broker at its review date.
        Expired = "expired",
    }
}

impl LawfulBasis {
    /// True for the codes that are conditions for special-category (health) data.
    pub fn is_special_category_condition(self) -> bool {
        matches!(
            self,
            LawfulBasis::Ukgdpr9_2H
                | LawfulBasis::Ukgdpr9_2G
                | LawfulBasis::Dpa18S1P6
                | LawfulBasis::Dpa18S1P10
                | LawfulBasis::Dpa18S1P11
                | LawfulBasis::Dpa18S1P18
        )
    }

    /// True for the UK GDPR Article 6 bases (or the Part 3 regime that replaces them for police).
    pub fn is_article_6(self) -> bool {
        matches!(
            self,
            LawfulBasis::Ukgdpr6_1C | LawfulBasis::Ukgdpr6_1D | LawfulBasis::Ukgdpr6_1E | LawfulBasis::Dpa18Part3
        )
    }
}
