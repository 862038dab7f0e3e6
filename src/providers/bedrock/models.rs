//! Bedrock model ids: from the Claude names clients send, and back.

// Model ids

/// The Bedrock model id for the model a request names (after the account's own
/// `supportedModels` mapping).
///
/// - An id that is already Bedrock's (`...anthropic....`, or an ARN) passes unchanged.
/// - A small/fast (haiku) request uses the account's `small_fast_model` when set.
/// - A Claude name (dated, or a known alias) becomes `{profile}anthropic.{name}-v1:0` (`-v2:0`
///   for `claude-3-5-sonnet-20241022`), where `{profile}` is the cross-region inference profile
///   prefix of the account's region (`us.`, `eu.`, `apac.`, `us-gov.`).
/// - Anything else uses the account's `default_model`, or goes through as it is.
pub fn bedrock_model_id(
    model: &str,
    region: &str,
    default_model: &str,
    small_fast_model: &str,
) -> String {
    let m = model.trim();
    if is_bedrock_id(m) {
        return m.to_owned();
    }
    let configured = |v: &str| {
        let v = v.trim();
        if is_bedrock_id(v) {
            v.to_owned()
        } else {
            claude_to_bedrock(v, region).unwrap_or_else(|| v.to_owned())
        }
    };
    if m.to_ascii_lowercase().contains("haiku") && !small_fast_model.trim().is_empty() {
        return configured(small_fast_model);
    }
    if let Some(id) = claude_to_bedrock(m, region) {
        return id;
    }
    if !default_model.trim().is_empty() {
        return configured(default_model);
    }
    m.to_owned()
}

fn is_bedrock_id(m: &str) -> bool {
    m.contains("anthropic.") || m.starts_with("arn:")
}

/// The cross-region inference profile prefix for a region (empty: use the base model id).
pub fn region_prefix(region: &str) -> &'static str {
    let r = region.trim().to_ascii_lowercase();
    if r.starts_with("us-gov-") {
        "us-gov."
    } else if r.starts_with("us-") {
        "us."
    } else if r.starts_with("eu-") {
        "eu."
    } else if r.starts_with("ap-") {
        "apac."
    } else {
        ""
    }
}

/// Undated Anthropic aliases and the dated model each stands for.
const ALIASES: &[(&str, &str)] = &[
    ("claude-opus-4-5", "claude-opus-4-5-20251101"),
    ("claude-opus-4-1", "claude-opus-4-1-20250805"),
    ("claude-opus-4-0", "claude-opus-4-20250514"),
    ("claude-opus-4", "claude-opus-4-20250514"),
    ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929"),
    ("claude-sonnet-4-0", "claude-sonnet-4-20250514"),
    ("claude-sonnet-4", "claude-sonnet-4-20250514"),
    ("claude-haiku-4-5", "claude-haiku-4-5-20251001"),
    ("claude-3-7-sonnet-latest", "claude-3-7-sonnet-20250219"),
    ("claude-3-7-sonnet", "claude-3-7-sonnet-20250219"),
    ("claude-3-5-sonnet-latest", "claude-3-5-sonnet-20241022"),
    ("claude-3-5-haiku-latest", "claude-3-5-haiku-20241022"),
    ("claude-3-opus-latest", "claude-3-opus-20240229"),
];

/// Bedrock's version suffix for dated models that are not `-v1:0`.
const VERSIONS: &[(&str, &str)] = &[("claude-3-5-sonnet-20241022", "v2:0")];

/// `claude-...-YYYYMMDD` (or a known alias) -> Bedrock id; None for anything else.
fn claude_to_bedrock(name: &str, region: &str) -> Option<String> {
    let lower = name.trim().to_ascii_lowercase();
    let dated = ALIASES
        .iter()
        .find(|(a, _)| *a == lower)
        .map_or(lower.as_str(), |(_, d)| *d);
    let (stem, date) = dated.rsplit_once('-')?;
    let valid = dated.starts_with("claude-")
        && stem.len() > "claude".len()
        && date.len() == 8
        && date.bytes().all(|b| b.is_ascii_digit())
        && dated
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !valid {
        return None;
    }
    let version = VERSIONS
        .iter()
        .find(|(m, _)| *m == dated)
        .map_or("v1:0", |(_, v)| *v);
    Some(format!(
        "{}anthropic.{dated}-{version}",
        region_prefix(region)
    ))
}

/// The Anthropic model name of a Bedrock id (`us.anthropic.claude-x-20250101-v1:0` ->
/// `claude-x-20250101`), for reporting and pricing.
pub fn anthropic_model_name(model_id: &str) -> Option<&str> {
    let (_, rest) = model_id.split_once("anthropic.")?;
    let rest = rest.split_once(':').map_or(rest, |(m, _)| m);
    let name = match rest.rsplit_once("-v") {
        Some((m, v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => m,
        _ => rest,
    };
    (!name.is_empty()).then_some(name)
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::providers::bedrock::*;

    // ---- model ids

    #[test]
    fn model_mapping() {
        let m = |model: &str, region: &str| bedrock_model_id(model, region, "", "");
        assert_eq!(
            m("claude-sonnet-4-5-20250929", "us-east-1"),
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
        );
        assert_eq!(
            m("claude-sonnet-4-5", "eu-west-1"),
            "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"
        );
        assert_eq!(
            m("claude-3-5-sonnet-20241022", "ap-northeast-1"),
            "apac.anthropic.claude-3-5-sonnet-20241022-v2:0"
        );
        assert_eq!(
            m("claude-3-5-haiku-20241022", "us-west-2"),
            "us.anthropic.claude-3-5-haiku-20241022-v1:0"
        );
        assert_eq!(
            m("claude-opus-4-1", "us-east-2"),
            "us.anthropic.claude-opus-4-1-20250805-v1:0"
        );
        assert_eq!(
            m("claude-3-7-sonnet-latest", "us-gov-west-1"),
            "us-gov.anthropic.claude-3-7-sonnet-20250219-v1:0"
        );
        assert_eq!(
            m("Claude-Haiku-4-5", "sa-east-1"),
            "anthropic.claude-haiku-4-5-20251001-v1:0"
        );
        // Already Bedrock's: unchanged.
        for id in [
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "anthropic.claude-v2:1",
            "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc",
        ] {
            assert_eq!(bedrock_model_id(id, "eu-west-1", "x", "y"), id);
        }
        // Unknown names: the default model (mapped if it is a Claude name), else as they are.
        assert_eq!(bedrock_model_id("gpt-4o", "us-east-1", "", ""), "gpt-4o");
        assert_eq!(
            bedrock_model_id("gpt-4o", "us-east-1", "claude-sonnet-4-20250514", ""),
            "us.anthropic.claude-sonnet-4-20250514-v1:0"
        );
        assert_eq!(
            bedrock_model_id("claude-next", "us-east-1", "eu.anthropic.claude-x-v1:0", ""),
            "eu.anthropic.claude-x-v1:0"
        );
        // Small/fast requests use small_fast_model when it is set.
        assert_eq!(
            bedrock_model_id(
                "claude-3-5-haiku-20241022",
                "us-east-1",
                "d",
                "us.anthropic.claude-haiku-4-5-20251001-v1:0"
            ),
            "us.anthropic.claude-haiku-4-5-20251001-v1:0"
        );
        assert_eq!(
            bedrock_model_id(
                "claude-haiku-4-5",
                "eu-central-1",
                "",
                "claude-3-5-haiku-20241022"
            ),
            "eu.anthropic.claude-3-5-haiku-20241022-v1:0"
        );
        assert_eq!(
            bedrock_model_id(
                "claude-sonnet-4-5-20250929",
                "us-east-1",
                "",
                "claude-3-5-haiku-20241022"
            ),
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
        );
    }

    #[test]
    fn anthropic_names_of_bedrock_ids() {
        assert_eq!(
            anthropic_model_name("us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
            Some("claude-sonnet-4-5-20250929")
        );
        assert_eq!(
            anthropic_model_name("anthropic.claude-3-5-sonnet-20241022-v2:0"),
            Some("claude-3-5-sonnet-20241022")
        );
        assert_eq!(anthropic_model_name("anthropic.claude-v2"), Some("claude"));
        assert_eq!(anthropic_model_name("amazon.nova-pro-v1:0"), None);
    }
}
