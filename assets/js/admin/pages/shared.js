// Things several admin pages share: the account types, health and status labels.

import { optionalApi } from "../session.js";

const PROXY = { name: "proxy", label: "Proxy", type: "proxy" };
const MODELS_MAP = {
  name: "supportedModels",
  label: "Models",
  type: "mapping",
  hint: "Which models this account serves, and what they are called upstream. Empty = every model, unchanged.",
};
const COMMON_TAIL = [
  MODELS_MAP,
  { name: "priority", label: "Priority", type: "int", min: 1, max: 1000, default: 50, hint: "Lower numbers are picked first." },
  { name: "accountType", label: "Sharing", type: "select", options: [["shared", "Shared pool"], ["dedicated", "Dedicated (bound keys only)"]], default: "shared" },
  { name: "dailyQuota", label: "Daily quota", type: "money", hint: "Taken out of rotation for the day once spent. Blank = no quota." },
  { name: "quotaResetTime", label: "Quota resets at", type: "time", default: "00:00", hint: "Server time, HH:MM." },
  { name: "maxConcurrentTasks", label: "Max concurrent requests", type: "int", min: 0, blankIsZero: true, hint: "Blank or 0 = unlimited." },
  { name: "rateLimitDuration", label: "Cooldown after a rate limit (minutes)", type: "int", min: 0, max: 10080, default: 60, hint: "Used when a rate limit or spent usage window gives no reset time. A 429 that says nothing at all is a short throttle instead." },
  { name: "userAgent", label: "User agent", type: "text", placeholder: "Leave blank to pass the client's", span: true },
  { name: "disableAutoProtection", label: "Never take this account out of rotation automatically", type: "switch" },
  PROXY,
];

/**
 * Account types, in the order of their tabs: the admin collection path, what the type is, and
 * its form fields. A type whose path answers 404 is not offered. `oauth` types add an
 * authorisation step to the create form.
 */
export const ACCOUNT_TYPES = [
  {
    id: "claude-console",
    label: "Claude Console",
    path: "claude-console-accounts",
    blurb: "An Anthropic API key, or any Anthropic-compatible endpoint.",
    fields: [
      { name: "name", label: "Name", type: "text", required: true },
      { name: "description", label: "Description", type: "text" },
      { name: "apiUrl", label: "API URL", type: "url", required: true, placeholder: "https://api.anthropic.com", span: true },
      { name: "apiKey", label: "API key", type: "secret", required: true, placeholder: "sk-ant-api03-…", span: true, maskedFrom: "apiKeyMasked" },
      ...COMMON_TAIL,
    ],
  },
  {
    id: "claude",
    label: "Claude OAuth",
    path: "claude-accounts",
    blurb: "A Claude Pro or Max subscription, authorised with OAuth. crs refreshes its tokens.",
    oauth: {
      generate: "generate-auth-url",
      exchange: "exchange-code",
      result: "claudeAiOauth",
      provider: "Claude",
      tokens: ["sk-ant-oat01-…", "sk-ant-ort01-…"],
      hint: "Sign in with the Claude account in the page that opens and approve. The last page shows a code: copy it (or that page's whole address) and paste it here.",
    },
    fields: [
      { name: "name", label: "Name", type: "text", required: true },
      { name: "description", label: "Description", type: "text" },
      { name: "apiUrl", label: "API URL", type: "url", placeholder: "Blank = https://api.anthropic.com", span: true },
      ...COMMON_TAIL,
      { name: "autoStopOnWarning", label: "Stop at a usage warning until the 5-hour window resets", type: "switch" },
      {
        name: "adaptOtherClients",
        label: "Adapt requests from clients other than Claude Code",
        type: "switch",
        hint: "Adds Claude Code's identity line, betas and user id. Check Anthropic's terms for your subscription first.",
      },
      { name: "useUnifiedUserAgent", label: "Send every request with the Claude Code identity last seen on this account", type: "switch" },
      { name: "useUnifiedClientId", label: "Use one client id for every user of this account", type: "switch" },
      { name: "unifiedClientId", label: "Client id", type: "text", placeholder: "64 hexadecimal digits", span: true },
    ],
  },
  {
    id: "openai-responses",
    label: "OpenAI Responses",
    path: "openai-responses-accounts",
    blurb: "An OpenAI Responses API key, for Codex.",
    fields: [
      { name: "name", label: "Name", type: "text", required: true },
      { name: "description", label: "Description", type: "text" },
      { name: "baseApi", label: "Base API URL", type: "url", required: true, placeholder: "https://api.openai.com/v1", span: true },
      { name: "apiKey", label: "API key", type: "secret", required: true, placeholder: "sk-…", span: true, maskedFrom: "apiKeyMasked" },
      ...COMMON_TAIL,
    ],
  },
  {
    id: "openai",
    label: "ChatGPT (Codex)",
    path: "openai-accounts",
    blurb: "A ChatGPT Plus or Pro subscription, signed in the way Codex CLI signs in. crs refreshes its tokens.",
    oauth: {
      generate: "generate-auth-url",
      exchange: "exchange-code",
      result: "openaiOauth",
      info: "accountInfo",
      provider: "ChatGPT",
      refreshOnly: true,
      tokens: ["eyJhbGciOi…", "rt_…"],
      hint: "Sign in with the ChatGPT account in the page that opens and approve. The browser then lands on a localhost address that does not load: copy that whole address and paste it here.",
    },
    fields: [
      { name: "name", label: "Name", type: "text", required: true },
      { name: "description", label: "Description", type: "text" },
      { name: "baseApi", label: "Codex backend URL", type: "url", placeholder: "Blank = https://chatgpt.com/backend-api/codex", span: true },
      ...COMMON_TAIL,
    ],
  },
  {
    id: "gemini-api",
    label: "Gemini",
    path: "gemini-api-accounts",
    blurb: "A Google Gemini API key.",
    fields: [
      { name: "name", label: "Name", type: "text", required: true },
      { name: "description", label: "Description", type: "text" },
      { name: "baseUrl", label: "Base URL", type: "url", placeholder: "Blank = https://generativelanguage.googleapis.com", span: true },
      { name: "apiKey", label: "API key", type: "secret", required: true, placeholder: "AIza…", span: true, maskedFrom: "apiKeyMasked" },
      ...COMMON_TAIL,
    ],
  },
  {
    id: "gemini",
    label: "Gemini OAuth",
    path: "gemini-accounts",
    blurb: "A Google account signed in as the Gemini CLI does, served through Google's Code Assist. crs refreshes its tokens and finds its Google Cloud project when none is set.",
    oauth: {
      generate: "generate-auth-url",
      exchange: "exchange-code",
      result: "geminiOauth",
      provider: "Google",
      tokens: ["ya29.…", "1//…"],
      paste: (t) => ({ access_token: t.accessToken, refresh_token: t.refreshToken }),
      hint: "Sign in with the Google account in the page that opens and allow access. Google then shows an authorisation code: copy it and paste it here.",
    },
    fields: [
      { name: "name", label: "Name", type: "text", required: true },
      { name: "description", label: "Description", type: "text" },
      { name: "projectId", label: "Google Cloud project", type: "text", placeholder: "Blank = the one Code Assist gives the account", hint: "Needed for Workspace and paid accounts; free accounts get one automatically." },
      { name: "tempProjectId", label: "Project found", type: "text", placeholder: "Filled in by crs" },
      ...COMMON_TAIL,
    ],
  },
  {
    id: "azure-openai",
    label: "Azure OpenAI",
    path: "azure-openai-accounts",
    blurb: "An Azure OpenAI deployment.",
    fields: [
      { name: "name", label: "Name", type: "text", required: true },
      { name: "description", label: "Description", type: "text" },
      { name: "azureEndpoint", label: "Endpoint", type: "url", required: true, placeholder: "https://example.openai.azure.com", span: true },
      { name: "deploymentName", label: "Deployment", type: "text" },
      { name: "apiVersion", label: "API version", type: "text", placeholder: "2025-04-01-preview" },
      { name: "apiKey", label: "API key", type: "secret", required: true, span: true, maskedFrom: "apiKeyMasked" },
      ...COMMON_TAIL,
    ],
  },
  {
    id: "bedrock",
    label: "Bedrock",
    path: "bedrock-accounts",
    blurb: "Claude models on AWS Bedrock.",
    fields: [
      { name: "name", label: "Name", type: "text", required: true },
      { name: "description", label: "Description", type: "text" },
      { name: "region", label: "Region", type: "text", required: true, placeholder: "us-east-1" },
      { name: "endpointUrl", label: "Endpoint URL", type: "url", placeholder: "Blank = the region's endpoint" },
      { name: "credentialType", label: "Credentials", type: "select", options: [["access_key", "AWS access key (signed requests)"], ["bearer_token", "Bedrock API key (bearer token)"]], default: "access_key", span: true },
      { name: "awsCredentials.accessKeyId", label: "Access key ID", type: "secret", required: true, maskedFrom: "accessKeyIdMasked", showIf: ["credentialType", ["access_key", "default"]] },
      { name: "awsCredentials.secretAccessKey", label: "Secret access key", type: "secret", required: true, showIf: ["credentialType", ["access_key", "default"]] },
      { name: "awsCredentials.sessionToken", label: "Session token", type: "secret", span: true, hint: "Only for temporary credentials.", showIf: ["credentialType", ["access_key", "default"]] },
      { name: "bearerToken", label: "Bedrock API key", type: "secret", required: true, span: true, maskedFrom: "bearerTokenMasked", placeholder: "ABSK…", hint: "Sent as Authorization: Bearer instead of a signature.", showIf: ["credentialType", ["bearer_token"]] },
      { name: "defaultModel", label: "Default model", type: "text", placeholder: "us.anthropic.claude-sonnet-4-5-20250929-v1:0" },
      { name: "smallFastModel", label: "Small fast model", type: "text" },
      ...COMMON_TAIL,
    ],
  },
  {
    id: "droid",
    label: "Droid",
    path: "droid-accounts",
    blurb: "Factory.ai Droid: a pool of Factory API keys, or a Factory login (WorkOS).",
    device: {
      generate: "generate-auth-url",
      exchange: "exchange-code",
      when: ["authenticationMethod", [""]],
      hint: "Get a code, open the page, sign in with the Factory account to share and allow access. Then add the account: crs collects the tokens.",
    },
    fields: [
      { name: "name", label: "Name", type: "text", required: true },
      { name: "description", label: "Description", type: "text" },
      { name: "authenticationMethod", label: "Sign-in", type: "select", keepEmpty: true, options: [["api_key", "API keys (a pool)"], ["", "Factory login (device code)"], ["manual", "Factory login (refresh token)"]], default: "api_key", span: true },
      { name: "apiKeys", label: "API keys", type: "keyPool", span: true, showIf: ["authenticationMethod", ["api_key"]], hint: "Requests take a usable key at random (a conversation keeps its key). A key Factory refuses is marked and leaves the pool." },
      { name: "refreshToken", label: "Refresh token", type: "secret", required: true, span: true, hint: "A WorkOS refresh token from a Factory login; crs refreshes it before first use.", showIf: ["authenticationMethod", ["manual"]] },
      { name: "endpointType", label: "Endpoint", type: "select", options: [["anthropic", "Anthropic"], ["openai", "OpenAI"], ["comm", "Chat Completions"]], default: "anthropic" },
      { name: "baseUrl", label: "Base URL", type: "url", placeholder: "Blank = Factory's" },
      ...COMMON_TAIL,
    ],
  },
  {
    id: "ccr",
    label: "CCR",
    path: "ccr-accounts",
    blurb: "A Claude Code Router endpoint.",
    fields: [
      { name: "name", label: "Name", type: "text", required: true },
      { name: "description", label: "Description", type: "text" },
      { name: "apiUrl", label: "API URL", type: "url", required: true, span: true },
      { name: "apiKey", label: "API key", type: "secret", required: true, span: true, maskedFrom: "apiKeyMasked" },
      ...COMMON_TAIL,
    ],
  },
];

/**
 * Which key field binds a key to an account, per service: the account types it may name and
 * the group family (`group:{id}` values).
 */
export const KEY_BINDINGS = [
  { field: "claudeAccountId", types: ["claude"], family: "claude", label: "Claude OAuth account or group" },
  { field: "claudeConsoleAccountId", types: ["claude-console", "ccr"], label: "Claude Console account" },
  { field: "bedrockAccountId", types: ["bedrock"], label: "Bedrock account" },
  { field: "openaiAccountId", types: ["openai-responses", "openai"], family: "openai", label: "OpenAI account or group" },
  { field: "azureOpenaiAccountId", types: ["azure-openai"], label: "Azure OpenAI account" },
  { field: "geminiAccountId", types: ["gemini-api", "gemini"], family: "gemini", label: "Gemini account or group" },
  { field: "droidAccountId", types: ["droid"], family: "droid", label: "Droid account or group" },
];

let typesPromise = null;

/**
 * The account types this server offers, with their accounts: [{type, accounts}]. Console is
 * always there; the others are probed once per page load (404 = not offered yet).
 */
export function availableAccountTypes({ refresh = false } = {}) {
  if (!typesPromise || refresh) {
    typesPromise = Promise.all(
      ACCOUNT_TYPES.map(async (type) => {
        try {
          const r = await optionalApi(`/admin/${type.path}`);
          if (r === null) return null;
          return { type, accounts: listOf(r) };
        } catch (e) {
          if (type.id === "claude-console") throw e;
          return null;
        }
      }),
    ).then((list) => list.filter(Boolean));
    typesPromise.catch(() => {
      typesPromise = null;
    });
  }
  return typesPromise;
}

/** The array in a list response, whatever it is called. */
export function listOf(r) {
  if (!r) return [];
  if (Array.isArray(r.data)) return r.data;
  if (r.data && Array.isArray(r.data.items)) return r.data.items;
  if (Array.isArray(r.accounts)) return r.accounts;
  return [];
}

/** The instant (ms) until which an account is out of rotation, or 0. */
export function cooldownUntil(a) {
  const v = a.cooldownUntil;
  if (!v) return 0;
  const t = typeof v === "number" ? v : Date.parse(v);
  return Number.isFinite(t) && t > Date.now() ? t : 0;
}

let groupsPromise = null;

/** Account groups ([{id, name, platform}]), or [] when the server has none. */
export function accountGroups({ refresh = false } = {}) {
  if (!groupsPromise || refresh) {
    groupsPromise = optionalApi("/admin/account-groups")
      .then((r) => listOf(r))
      .catch(() => []);
  }
  return groupsPromise;
}

/** [label, badge kind] for an account's health. */
export function accountHealth(a) {
  const status = String(a.status || "active").toLowerCase();
  if (a.isActive === false) return ["Disabled", ""];
  if (status !== "active" && status !== "") {
    const label = status.replace(/[_-]+/g, " ");
    return [label.charAt(0).toUpperCase() + label.slice(1), status.includes("limit") || status.includes("overload") ? "warn" : "danger"];
  }
  if (cooldownUntil(a)) return ["Cooling down", "warn"];
  if (a.schedulable === false) return ["Paused", ""];
  if ((a.errorRate || 0) >= 0.2) return ["Failing", "danger"];
  if ((a.errorRate || 0) >= 0.05) return ["Degraded", "warn"];
  return ["Healthy", "ok"];
}

/** [label, badge kind] for an API key. */
export function keyStatus(k) {
  if (k.isDeleted) return ["Deleted", "danger"];
  if (!k.isActive) return ["Disabled", ""];
  if (k.expiresAt && Date.parse(k.expiresAt) <= Date.now()) return ["Expired", "danger"];
  if (k.expirationMode === "activation" && !k.isActivated) return ["Not activated", "accent"];
  return ["Active", "ok"];
}
