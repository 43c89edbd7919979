//! The profile-enrollment policy (Okta's `PROFILE_ENROLLMENT` type): whether unknown users may
//! register themselves, which profile attributes the sign-up form collects, which groups new
//! users join, and which registration inline hook is asked. Haken has exactly one such policy
//! with one rule, both created on first use under fixed ids so that every node agrees on them.

use serde::{Deserialize, Serialize};

use crate::hook::HookStatus;
use crate::time::Timestamp;

/// `type` of the policy and of its rule.
pub const PROFILE_ENROLLMENT: &str = "PROFILE_ENROLLMENT";
/// The default policy's id: fixed, so concurrent first uses on several nodes create one policy.
pub const DEFAULT_POLICY_ID: &str = "00pdefaultenroll0001";
/// The default policy's one rule.
pub const DEFAULT_RULE_ID: &str = "0prdefaultenroll0001";
pub const DEFAULT_POLICY_NAME: &str = "Default Policy";
pub const DEFAULT_RULE_NAME: &str = "Catch-all Rule";

/// A policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub status: HookStatus,
    pub priority: u32,
    pub system: bool,
    pub policy_type: String,
    pub created: Timestamp,
    pub last_updated: Timestamp,
}

/// Whether unknown users may register (`access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    #[serde(rename = "ALLOW")]
    Allow,
    #[serde(rename = "DENY")]
    Deny,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Allow => "ALLOW",
            Access::Deny => "DENY",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ALLOW" => Some(Access::Allow),
            "DENY" => Some(Access::Deny),
            _ => None,
        }
    }
}

/// One attribute the sign-up form collects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileAttribute {
    pub name: String,
    pub label: String,
    pub required: bool,
}

/// `actions.profileEnrollment` of the rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileEnrollment {
    pub access: Access,
    /// `preRegistrationInlineHooks[0].inlineHookId`: at most one hook per policy.
    pub inline_hook_id: Option<String>,
    pub profile_attributes: Vec<ProfileAttribute>,
    pub target_group_ids: Vec<String>,
    /// `REGISTER` or `DENY`.
    pub unknown_user_action: String,
    pub email_verification: bool,
}

impl ProfileEnrollment {
    /// What a fresh org has: registration allowed, email and names collected, no hook.
    pub fn default_actions() -> Self {
        let attr =
            |name: &str, label: &str| ProfileAttribute { name: name.into(), label: label.into(), required: true };
        ProfileEnrollment {
            access: Access::Allow,
            inline_hook_id: None,
            profile_attributes: vec![
                attr("email", "Email"),
                attr("firstName", "First name"),
                attr("lastName", "Last name"),
            ],
            target_group_ids: Vec::new(),
            unknown_user_action: "REGISTER".to_owned(),
            email_verification: false,
        }
    }

    /// Whether unknown users may register.
    pub fn registration_enabled(&self) -> bool {
        self.access == Access::Allow && self.unknown_user_action == "REGISTER"
    }

    pub fn attribute(&self, name: &str) -> Option<&ProfileAttribute> {
        self.profile_attributes.iter().find(|a| a.name == name)
    }
}

/// A rule of a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyRule {
    pub id: String,
    pub policy_id: String,
    pub name: String,
    pub status: HookStatus,
    pub priority: u32,
    pub system: bool,
    pub rule_type: String,
    pub enrollment: ProfileEnrollment,
    pub created: Timestamp,
    pub last_updated: Timestamp,
}

/// The default policy as first created.
pub fn default_policy(now: Timestamp) -> Policy {
    Policy {
        id: DEFAULT_POLICY_ID.to_owned(),
        name: DEFAULT_POLICY_NAME.to_owned(),
        description: Some("The default profile enrollment policy: who may register and what they are asked.".into()),
        status: HookStatus::Active,
        priority: 1,
        system: true,
        policy_type: PROFILE_ENROLLMENT.to_owned(),
        created: now,
        last_updated: now,
    }
}

/// The default policy's rule as first created.
pub fn default_rule(now: Timestamp) -> PolicyRule {
    PolicyRule {
        id: DEFAULT_RULE_ID.to_owned(),
        policy_id: DEFAULT_POLICY_ID.to_owned(),
        name: DEFAULT_RULE_NAME.to_owned(),
        status: HookStatus::Active,
        priority: 99,
        system: true,
        rule_type: PROFILE_ENROLLMENT.to_owned(),
        enrollment: ProfileEnrollment::default_actions(),
        created: now,
        last_updated: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{IdKind, looks_like};

    #[test]
    fn fixed_ids_look_like_oktas() {
        assert!(looks_like(IdKind::Policy, DEFAULT_POLICY_ID));
        assert!(looks_like(IdKind::PolicyRule, DEFAULT_RULE_ID));
    }

    #[test]
    fn defaults_allow_registration() {
        let r = default_rule(Timestamp(0));
        assert!(r.enrollment.registration_enabled());
        assert!(r.enrollment.attribute("email").is_some_and(|a| a.required));
        let mut deny = r.enrollment.clone();
        deny.access = Access::Deny;
        assert!(!deny.registration_enabled());
        assert_eq!(Access::parse("DENY"), Some(Access::Deny));
        assert_eq!(Access::parse("deny"), None);
    }
}
