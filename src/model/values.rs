//! Typed values of the records, parsed once and written back in v1's string forms: key
//! bindings, account statuses, expiration and activation modes, restriction modes, services.

use serde::{Deserialize, Serialize};

/// A closed set of v1's string values as an enum: written as v1's strings, and an empty or
/// unknown string reads as the default.
macro_rules! v1_choice {
    ($(#[$m:meta])* $name:ident, default $def:ident, { $($(#[$vm:meta])* $var:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $var,)+
        }

        impl Default for $name {
            fn default() -> Self {
                $name::$def
            }
        }

        impl $name {
            /// v1's names, in declaration order.
            pub const NAMES: &[&str] = &[$($s),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$var => $s,)+
                }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($s => Some($name::$var),)+
                    _ => None,
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = Option::<std::borrow::Cow<'de, str>>::deserialize(d)?;
                Ok(s.and_then(|s| $name::parse(&s)).unwrap_or_default())
            }
        }
    };
}

v1_choice!(
    /// When a key stops working: at a fixed date, or a duration after its first use.
    ExpirationMode, default Fixed, {
        Fixed = "fixed",
        Activation = "activation",
    }
);

v1_choice!(
    /// The unit of `activation_days`.
    ActivationUnit, default Days, {
        Days = "days",
        Hours = "hours",
    }
);

v1_choice!(
    /// How `restricted_models` is read: the models a key may not use (v1), or the only ones it may.
    RestrictionMode, default Deny, {
        Deny = "deny",
        Allow = "allow",
    }
);

/// An account's status (v1's names). Statuses this version does not know are kept as they came.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AccountStatus {
    #[default]
    Active,
    /// The upstream refused the credential (401).
    Unauthorized,
    /// The upstream banned or disabled the organisation.
    Blocked,
    Error,
    /// An OAuth token refresh failed.
    RefreshFailed,
    Suspended,
    Other(String),
}

impl AccountStatus {
    pub fn parse(s: &str) -> AccountStatus {
        match s {
            "" | "active" => AccountStatus::Active,
            "unauthorized" => AccountStatus::Unauthorized,
            "blocked" => AccountStatus::Blocked,
            "error" => AccountStatus::Error,
            "refresh_failed" => AccountStatus::RefreshFailed,
            "suspended" => AccountStatus::Suspended,
            other => AccountStatus::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Unauthorized => "unauthorized",
            AccountStatus::Blocked => "blocked",
            AccountStatus::Error => "error",
            AccountStatus::RefreshFailed => "refresh_failed",
            AccountStatus::Suspended => "suspended",
            AccountStatus::Other(s) => s,
        }
    }

    /// Statuses that keep an account out of rotation until it recovers or an admin acts.
    pub fn needs_attention(&self) -> bool {
        matches!(
            self,
            AccountStatus::Unauthorized
                | AccountStatus::Blocked
                | AccountStatus::RefreshFailed
                | AccountStatus::Error
                | AccountStatus::Suspended
        )
    }
}

impl Serialize for AccountStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AccountStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Option::<std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(AccountStatus::parse(s.as_deref().unwrap_or("")))
    }
}

/// Services a key can be permitted to use (v1's `permissions` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Claude,
    Gemini,
    OpenAI,
    Droid,
}

impl Service {
    pub const ALL: [Service; 4] = [
        Service::Claude,
        Service::Gemini,
        Service::OpenAI,
        Service::Droid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Service::Claude => "claude",
            Service::Gemini => "gemini",
            Service::OpenAI => "openai",
            Service::Droid => "droid",
        }
    }
    pub fn display(self) -> &'static str {
        match self {
            Service::Claude => "Claude",
            Service::Gemini => "Gemini",
            Service::OpenAI => "OpenAI",
            Service::Droid => "Droid",
        }
    }
}

/// The seven fields of a key that bind it to an account or group, one per v1 account family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingField {
    Claude,
    ClaudeConsole,
    Gemini,
    OpenAI,
    AzureOpenAI,
    Bedrock,
    Droid,
}

impl BindingField {
    pub const ALL: [BindingField; 7] = [
        BindingField::Claude,
        BindingField::ClaudeConsole,
        BindingField::Gemini,
        BindingField::OpenAI,
        BindingField::AzureOpenAI,
        BindingField::Bedrock,
        BindingField::Droid,
    ];

    /// v1's field name (in its records and the admin API).
    pub fn name(self) -> &'static str {
        match self {
            BindingField::Claude => "claudeAccountId",
            BindingField::ClaudeConsole => "claudeConsoleAccountId",
            BindingField::Gemini => "geminiAccountId",
            BindingField::OpenAI => "openaiAccountId",
            BindingField::AzureOpenAI => "azureOpenaiAccountId",
            BindingField::Bedrock => "bedrockAccountId",
            BindingField::Droid => "droidAccountId",
        }
    }
}

/// v1's type marker in front of an account id in a binding field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prefix {
    #[default]
    None,
    /// `responses:{id}`: an OpenAI Responses account in `openaiAccountId`.
    Responses,
    /// `api:{id}`: a Gemini API-key account in `geminiAccountId`.
    Api,
}

impl Prefix {
    pub fn as_str(self) -> &'static str {
        match self {
            Prefix::None => "",
            Prefix::Responses => "responses:",
            Prefix::Api => "api:",
        }
    }
}

/// What a key's binding field says, parsed once from v1's string form (`""`, `{id}`,
/// `responses:{id}`, `api:{id}`, `group:{id}`) and written back in the same form.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Binding {
    /// Not bound: the shared pool serves the key.
    #[default]
    None,
    /// One account.
    Account { id: String, prefix: Prefix },
    /// The members of an account group.
    Group(String),
}

impl Binding {
    pub fn parse(s: &str) -> Binding {
        let s = s.trim();
        if s.is_empty() {
            return Binding::None;
        }
        if let Some(g) = s.strip_prefix("group:") {
            return Binding::Group(g.to_owned());
        }
        for prefix in [Prefix::Responses, Prefix::Api] {
            if let Some(id) = s.strip_prefix(prefix.as_str()) {
                return Binding::Account {
                    id: id.to_owned(),
                    prefix,
                };
            }
        }
        Binding::Account {
            id: s.to_owned(),
            prefix: Prefix::None,
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self, Binding::None)
    }

    /// The bound account's id, whatever its prefix.
    pub fn account(&self) -> Option<&str> {
        match self {
            Binding::Account { id, .. } => Some(id),
            _ => None,
        }
    }

    pub fn group(&self) -> Option<&str> {
        match self {
            Binding::Group(g) => Some(g),
            _ => None,
        }
    }
}

impl std::fmt::Display for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Binding::None => Ok(()),
            Binding::Account { id, prefix } => write!(f, "{}{id}", prefix.as_str()),
            Binding::Group(g) => write!(f, "group:{g}"),
        }
    }
}

impl Serialize for Binding {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Binding {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        Ok(Binding::parse(s.as_deref().unwrap_or("")))
    }
}
