//! The account types: `Platform` and the table of their static facts (`PLATFORMS`).

use serde::{Deserialize, Serialize};

use super::{BindingField, Prefix, Service};

/// Upstream account types, named as v1's `platform` field.
#[derive(
    Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, Default, PartialOrd, Ord,
)]
pub enum Platform {
    /// Claude subscription (Max/Pro) through OAuth tokens.
    #[serde(rename = "claude")]
    Claude,
    /// Anthropic-compatible API key upstream.
    #[default]
    #[serde(rename = "claude-console")]
    ClaudeConsole,
    /// OpenAI Responses API key upstream (Codex).
    #[serde(rename = "openai-responses")]
    OpenAIResponses,
    /// Gemini API key upstream.
    #[serde(rename = "gemini-api")]
    GeminiApi,
    #[serde(rename = "azure-openai")]
    AzureOpenAI,
    /// AWS Bedrock (Claude models), signed with SigV4.
    #[serde(rename = "bedrock")]
    Bedrock,
    /// Factory.ai Droid.
    #[serde(rename = "droid")]
    Droid,
    /// Claude Code Router (an Anthropic-compatible endpoint).
    #[serde(rename = "ccr")]
    Ccr,
    /// Gemini through Google's Code Assist API with the Gemini CLI's Google login (OAuth).
    #[serde(rename = "gemini")]
    Gemini,
    /// ChatGPT subscription (Plus/Pro) through Codex CLI's OAuth tokens, on the Codex backend
    /// (v1's `openai` accounts).
    #[serde(rename = "openai")]
    OpenAI,
}

impl Platform {
    pub const ALL: [Platform; 10] = [
        Platform::Claude,
        Platform::ClaudeConsole,
        Platform::OpenAIResponses,
        Platform::GeminiApi,
        Platform::AzureOpenAI,
        Platform::Bedrock,
        Platform::Droid,
        Platform::Ccr,
        Platform::Gemini,
        Platform::OpenAI,
    ];

    /// The static facts of this account type (its row in `PLATFORMS`).
    pub fn spec(self) -> &'static PlatformSpec {
        let s = &PLATFORMS[self as usize];
        debug_assert_eq!(s.platform, self);
        s
    }

    /// v1's `platform` name.
    pub fn as_str(self) -> &'static str {
        self.spec().name
    }

    pub fn parse(s: &str) -> Option<Platform> {
        PLATFORMS.iter().find(|p| p.name == s).map(|p| p.platform)
    }

    /// The admin path segment (`/admin/<this>`), as v1.
    pub fn admin_path(self) -> &'static str {
        self.spec().admin_path
    }

    /// Group platform names (v1's account_group.platform): claude, openai, gemini, droid.
    pub fn group_family(self) -> &'static str {
        self.spec().group_family
    }

    /// The account types that serve a service's routes, in table order.
    pub fn serving(service: Service) -> &'static [Platform] {
        static BY_SERVICE: std::sync::LazyLock<[Vec<Platform>; 4]> =
            std::sync::LazyLock::new(|| {
                Service::ALL.map(|s| {
                    PLATFORMS
                        .iter()
                        .filter(|p| p.services.contains(&s))
                        .map(|p| p.platform)
                        .collect()
                })
            });
        &BY_SERVICE[service as usize]
    }
}

/// The static facts of one account type. Behaviour lives in `providers` (one file per type,
/// behind `providers::AccountType`); the names, paths and fields that admin, import, routing
/// and the UI need live here, one row per type.
#[derive(Debug)]
pub struct PlatformSpec {
    pub platform: Platform,
    /// v1's `platform` value.
    pub name: &'static str,
    /// Shown in the UI.
    pub label: &'static str,
    /// `/admin/<admin_path>`, as v1.
    pub admin_path: &'static str,
    /// v1's `account_group.platform` family.
    pub group_family: &'static str,
    /// The JSON field that holds `Account::api_url` in the admin API and in v1's records.
    pub url_field: &'static str,
    /// The key field that binds keys to accounts of this type, and v1's id prefix in it.
    pub binding: Option<(BindingField, Prefix)>,
    /// The services (key permissions, route families) whose requests it serves.
    pub services: &'static [Service],
    /// Serves Anthropic `count_tokens`.
    pub count_tokens: bool,
    /// The model "test this account" asks for when nothing else names one.
    pub probe_model: &'static str,
}

/// The account types, in `Platform` order.
pub const PLATFORMS: [PlatformSpec; 10] = [
    PlatformSpec {
        platform: Platform::Claude,
        name: "claude",
        label: "Claude (subscription)",
        admin_path: "claude-accounts",
        group_family: "claude",
        url_field: "apiUrl",
        binding: Some((BindingField::Claude, Prefix::None)),
        services: &[Service::Claude],
        count_tokens: true,
        probe_model: "claude-3-5-haiku-20241022",
    },
    PlatformSpec {
        platform: Platform::ClaudeConsole,
        name: "claude-console",
        label: "Claude Console",
        admin_path: "claude-console-accounts",
        group_family: "claude",
        url_field: "apiUrl",
        binding: Some((BindingField::ClaudeConsole, Prefix::None)),
        services: &[Service::Claude],
        count_tokens: true,
        probe_model: "claude-3-5-haiku-20241022",
    },
    PlatformSpec {
        platform: Platform::OpenAIResponses,
        name: "openai-responses",
        label: "OpenAI Responses",
        admin_path: "openai-responses-accounts",
        group_family: "openai",
        url_field: "baseApi",
        binding: Some((BindingField::OpenAI, Prefix::Responses)),
        services: &[Service::OpenAI],
        count_tokens: false,
        probe_model: "gpt-4.1-mini",
    },
    PlatformSpec {
        platform: Platform::GeminiApi,
        name: "gemini-api",
        label: "Gemini API",
        admin_path: "gemini-api-accounts",
        group_family: "gemini",
        url_field: "baseUrl",
        binding: Some((BindingField::Gemini, Prefix::Api)),
        services: &[Service::Gemini],
        count_tokens: false,
        probe_model: "gemini-2.5-flash",
    },
    PlatformSpec {
        platform: Platform::AzureOpenAI,
        name: "azure-openai",
        label: "Azure OpenAI",
        admin_path: "azure-openai-accounts",
        group_family: "openai",
        url_field: "azureEndpoint",
        binding: Some((BindingField::AzureOpenAI, Prefix::None)),
        services: &[Service::OpenAI],
        count_tokens: false,
        probe_model: "gpt-4o-mini",
    },
    PlatformSpec {
        platform: Platform::Bedrock,
        name: "bedrock",
        label: "AWS Bedrock",
        admin_path: "bedrock-accounts",
        group_family: "claude",
        url_field: "endpointUrl",
        binding: Some((BindingField::Bedrock, Prefix::None)),
        services: &[Service::Claude],
        count_tokens: false,
        probe_model: "claude-3-5-haiku-20241022",
    },
    PlatformSpec {
        platform: Platform::Droid,
        name: "droid",
        label: "Droid",
        admin_path: "droid-accounts",
        group_family: "droid",
        url_field: "baseUrl",
        binding: Some((BindingField::Droid, Prefix::None)),
        services: &[Service::Droid],
        count_tokens: false,
        probe_model: "claude-3-5-haiku-20241022",
    },
    PlatformSpec {
        platform: Platform::Ccr,
        name: "ccr",
        label: "Claude Code Router",
        admin_path: "ccr-accounts",
        group_family: "claude",
        url_field: "apiUrl",
        binding: None,
        services: &[Service::Claude],
        count_tokens: true,
        probe_model: "claude-3-5-haiku-20241022",
    },
    PlatformSpec {
        platform: Platform::Gemini,
        name: "gemini",
        label: "Gemini (Google OAuth)",
        admin_path: "gemini-accounts",
        group_family: "gemini",
        // crs only: an override of the configured Code Assist endpoint (v1 has no such field).
        url_field: "apiUrl",
        binding: Some((BindingField::Gemini, Prefix::None)),
        services: &[Service::Gemini],
        count_tokens: false,
        probe_model: "gemini-2.5-flash",
    },
    PlatformSpec {
        platform: Platform::OpenAI,
        name: "openai",
        label: "ChatGPT (Codex OAuth)",
        admin_path: "openai-accounts",
        group_family: "openai",
        url_field: "baseApi",
        // v1 keeps these bare in `openaiAccountId`; Responses accounts use `responses:`.
        binding: Some((BindingField::OpenAI, Prefix::None)),
        services: &[Service::OpenAI],
        count_tokens: false,
        probe_model: "gpt-5",
    },
];
