//! The admin API: v1 paths and shapes, validation, secrets at rest, sessions.

use crate::common::*;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn admin_login_and_session_rules() {
    let env = Env::start().await;
    let r = env
        .http
        .post(env.url("/web/auth/login"))
        .json(&json!({"username": ADMIN_USER, "password": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "Invalid credentials", "message": "Invalid username or password"})
    );
    let r = env
        .http
        .post(env.url("/web/auth/login"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = env
        .http
        .post(env.url("/web/auth/login"))
        .body("{{{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let r = env
        .http
        .post(env.url("/web/auth/login"))
        .json(&json!({"username": ADMIN_USER, "password": ADMIN_PASS}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["success"], true);
    assert_eq!(v["username"], ADMIN_USER);
    assert_eq!(v["expiresIn"], 86_400_000);

    let r = env
        .http
        .get(env.url("/admin/api-keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "Missing admin token"
    );
    let r = env
        .http
        .get(env.url("/admin/api-keys"))
        .bearer_auth("forged.token.value")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A client API key is not an admin token.
    let (_, key) = env.create_key(json!({"name": "k"})).await;
    let r = env
        .http
        .get(env.url("/admin/api-keys"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Changing the password ends every existing session.
    let old = env.token.clone();
    let r = env
        .http
        .post(env.url("/web/auth/change-password"))
        .bearer_auth(&old)
        .json(&json!({"currentPassword": ADMIN_PASS, "newPassword": "a-much-better-one"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = env
        .http
        .get(env.url("/admin/api-keys"))
        .bearer_auth(&old)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(env.login(ADMIN_USER, ADMIN_PASS).await.is_none());
    assert!(env.login(ADMIN_USER, "a-much-better-one").await.is_some());
    env.stop().await;
}

#[tokio::test]
async fn api_key_crud_search_tags_pagination_soft_delete_restore() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (id, key) = env
        .create_key(json!({
            "name": "alice", "description": "team a", "tags": ["team-a", "cli"],
            "tokenLimit": 1000, "concurrencyLimit": 2, "rateLimitWindow": 60, "rateLimitRequests": 10,
            "dailyCostLimit": 5, "totalCostLimit": 0.05, "weeklyOpusCostLimit": 12.5,
            "permissions": ["claude"], "enableModelRestriction": true,
            "restrictedModels": ["claude-opus-4-1-20250805"], "allowedClients": ["claude_code"],
            "expiresAt": "2099-12-31T00:00:00.000Z"
        }))
        .await;
    assert!(
        key.starts_with("cr_")
            && key.len() == 67
            && key[3..].chars().all(|c| c.is_ascii_hexdigit())
    );
    for i in 0..4 {
        env.create_key(json!({"name": format!("bob-{i}"), "tags": ["team-b"]}))
            .await;
    }

    let (s, v) = env
        .admin(Method::GET, &format!("/admin/api-keys/{id}"), None)
        .await;
    assert_eq!(s, 200);
    let d = &v["data"];
    assert_eq!(d["name"], "alice");
    assert_eq!(d["totalCostLimit"], 0.05);
    assert_eq!(d["weeklyOpusCostLimit"], 12.5);
    assert_eq!(d["permissions"], json!(["claude"]));
    assert_eq!(d["restrictedModels"], json!(["claude-opus-4-1-20250805"]));
    assert!(
        d.get("apiKey").is_none(),
        "plaintext is shown only at creation"
    );
    assert!(
        !v.to_string().contains(&key[3..]),
        "neither the key nor anything derived from it leaks"
    );

    let (_, v) = env
        .admin(Method::GET, "/admin/api-keys?pageSize=2&page=1", None)
        .await;
    assert_eq!(
        v["data"]["pagination"],
        json!({"page": 1, "pageSize": 2, "total": 5, "totalPages": 3})
    );
    assert_eq!(v["data"]["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        v["data"]["availableTags"],
        json!(["cli", "team-a", "team-b"])
    );
    let (_, v) = env
        .admin(Method::GET, "/admin/api-keys?tag=team-b", None)
        .await;
    assert_eq!(v["data"]["pagination"]["total"], 4);
    let (_, v) = env
        .admin(Method::GET, "/admin/api-keys?search=ALI", None)
        .await;
    assert_eq!(v["data"]["items"][0]["id"], id.as_str());
    assert_eq!(v["data"]["pagination"]["total"], 1);
    assert_eq!(v["data"]["items"][0]["usage"]["total"]["requests"], 0);

    // Partial update keeps other fields.
    let (s, v) = env
        .admin(
            Method::PUT,
            &format!("/admin/api-keys/{id}"),
            Some(json!({"name": "alice2", "tags": []})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, v) = env
        .admin(Method::GET, &format!("/admin/api-keys/{id}"), None)
        .await;
    assert_eq!(v["data"]["name"], "alice2");
    assert_eq!(v["data"]["tags"], json!([]));
    assert_eq!(v["data"]["tokenLimit"], 1000);

    // Soft delete: the key stops authenticating at once, usage and record stay.
    let (s, _) = env
        .admin(Method::DELETE, &format!("/admin/api-keys/{id}"), None)
        .await;
    assert_eq!(s, 200);
    let r = env
        .http
        .get(env.url("/api/v1/usage"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["message"],
        "API key not found"
    );
    let (_, v) = env.admin(Method::GET, "/admin/api-keys", None).await;
    assert_eq!(v["data"]["pagination"]["total"], 4);
    let (_, v) = env
        .admin(Method::GET, "/admin/api-keys/deleted", None)
        .await;
    assert_eq!(v["total"], 1);
    assert_eq!(v["apiKeys"][0]["isDeleted"], true);
    let (s, _) = env
        .admin(Method::POST, &format!("/admin/api-keys/{id}/restore"), None)
        .await;
    assert_eq!(s, 200);
    let r = env
        .http
        .get(env.url("/api/v1/usage"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let (s, v) = env
        .admin(Method::GET, "/admin/api-keys/no-such-id", None)
        .await;
    assert_eq!((s, v["error"].as_str()), (404, Some("API key not found")));
    let (s, _) = env
        .admin(
            Method::PUT,
            "/admin/api-keys/no-such-id",
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(s, 404);
    env.stop().await;
}

#[tokio::test]
async fn api_key_validation_is_a_clear_400() {
    let env = Env::start().await;
    for (body, needle) in [
        (json!({}), "Name is required"),
        (json!({"name": "   "}), "Name is required"),
        (
            json!({"name": "x", "permissions": ["claude", "bogus"]}),
            "permissions",
        ),
        (json!({"name": "x", "dailyCostLimit": -1}), "dailyCostLimit"),
        (
            json!({"name": "x", "concurrencyLimit": 1.5}),
            "concurrencyLimit",
        ),
        (
            json!({"name": "x", "expiresAt": "next tuesday"}),
            "expiresAt",
        ),
        (json!({"name": "x", "tags": "not-a-list"}), "tags"),
        (json!({"name": "x", "weeklyResetDay": 9}), "weeklyResetDay"),
        (
            json!({"name": "x", "expirationMode": "activation"}),
            "activationDays",
        ),
        (json!({"name": "x".repeat(101)}), "name"),
    ] {
        let (s, v) = env
            .admin(Method::POST, "/admin/api-keys", Some(body.clone()))
            .await;
        assert_eq!(s, 400, "{body}");
        assert!(
            v["error"].as_str().unwrap().contains(needle),
            "{body} -> {v}"
        );
    }
    let (_, v) = env.admin(Method::GET, "/admin/api-keys", None).await;
    assert_eq!(v["data"]["pagination"]["total"], 0, "nothing half-created");
    env.stop().await;
}

#[tokio::test]
async fn console_account_secrets_are_encrypted_and_never_returned() {
    let env = Env::start().await;
    let proxy_pass = "proxy-pass-plaintext-777";
    let id = env
        .create_account(json!({
            "name": "secretive", "priority": 10,
            "proxy": {"type": "socks5", "host": "127.0.0.1", "port": 1080, "username": "u", "password": proxy_pass},
            "supportedModels": ["claude-sonnet-4-5-20250929"],
        }))
        .await;
    let (s, v) = env
        .admin(Method::GET, "/admin/claude-console-accounts", None)
        .await;
    assert_eq!(s, 200);
    let text = v.to_string();
    assert!(!text.contains(UPSTREAM_KEY));
    assert!(!text.contains(proxy_pass));
    let a = &v["data"][0];
    assert_eq!(a["id"], id.as_str());
    assert_eq!(a["apiKeyMasked"], crs::crypto::mask(UPSTREAM_KEY));
    assert_eq!(a["proxy"]["hasPassword"], true);
    assert_eq!(
        a["supportedModels"],
        json!({"claude-sonnet-4-5-20250929": "claude-sonnet-4-5-20250929"})
    );
    let (s, v) = env
        .admin(
            Method::GET,
            &format!("/admin/claude-console-accounts/{id}"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert!(!v.to_string().contains(UPSTREAM_KEY));

    // Updating other fields keeps the proxy password; the file never holds plaintext.
    let (s, _) = env
        .admin(
            Method::PUT,
            &format!("/admin/claude-console-accounts/{id}"),
            Some(json!({"proxy": {"type": "socks5", "host": "127.0.0.1", "port": 1081, "username": "u"}})),
        )
        .await;
    assert_eq!(s, 200);
    let st = env.crs.as_ref().unwrap().state.clone();
    let rec: crs::model::Account = st
        .store
        .get(crs::store::Table::Accounts, &id)
        .unwrap()
        .unwrap();
    assert_eq!(
        st.secrets
            .decrypt(&rec.proxy.as_ref().unwrap().password)
            .unwrap(),
        proxy_pass
    );
    assert_eq!(rec.proxy.as_ref().unwrap().port, 1081);
    let data_dir = env.data_dir();
    let _keep = env.stop().await;
    let raw = std::fs::read(data_dir.join("crs.redb")).unwrap();
    let find = |needle: &str| raw.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(!find(UPSTREAM_KEY), "upstream key stored in plaintext");
    assert!(!find(proxy_pass), "proxy password stored in plaintext");
    assert!(
        find("secretive"),
        "sanity: the record itself is in the file"
    );
}

#[tokio::test]
async fn console_account_validation() {
    let env = Env::start().await;
    for (body, needle) in [
        (json!({"name": "a", "apiUrl": "http://x"}), "required"),
        (
            json!({"name": "a", "apiUrl": "ftp://x", "apiKey": "k"}),
            "apiUrl",
        ),
        (
            json!({"name": "a", "apiUrl": "http://x", "apiKey": "k", "priority": 0}),
            "priority",
        ),
        (
            json!({"name": "a", "apiUrl": "http://x", "apiKey": "k", "accountType": "weird"}),
            "accountType",
        ),
        (
            json!({"name": "a", "apiUrl": "http://x", "apiKey": "k", "proxy": {"type": "ftp", "host": "h", "port": 1}}),
            "proxy",
        ),
        (
            json!({"name": "a", "apiUrl": "http://x", "apiKey": "k", "proxy": {"host": "h", "port": 70000}}),
            "port",
        ),
    ] {
        let (s, v) = env
            .admin(
                Method::POST,
                "/admin/claude-console-accounts",
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, 400, "{body}");
        assert!(
            v["error"].as_str().unwrap().contains(needle),
            "{body} -> {v}"
        );
    }
    let (s, _) = env
        .admin(
            Method::PUT,
            "/admin/claude-console-accounts/nope",
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 404);
    env.stop().await;
}

#[tokio::test]
async fn scheduling_prefers_lower_priority_honours_bindings_and_schedulable() {
    let env = Env::start().await;
    // Two upstream credentials so the mock tells which account served.
    env.mock
        .state
        .accepted_keys
        .lock()
        .push("sk-ant-second".into());
    let preferred = env
        .create_account(json!({"name": "preferred", "priority": 10}))
        .await;
    let backup = env
        .create_account(json!({"name": "backup", "priority": 90, "apiKey": "sk-ant-second"}))
        .await;
    let (_, key) = env.create_key(json!({"name": "pool"})).await;
    let (_, bound) = env
        .create_key(json!({"name": "bound", "claudeConsoleAccountId": backup}))
        .await;
    let last_key = || {
        env.mock
            .state
            .seen
            .lock()
            .last()
            .unwrap()
            .header("x-api-key")
            .unwrap()
            .to_owned()
    };

    for _ in 0..3 {
        let r = env
            .messages(&key, msg_body("m", false, "x"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(last_key(), UPSTREAM_KEY);
    }
    let r = env
        .messages(&bound, msg_body("m", false, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(last_key(), "sk-ant-second");

    let (s, v) = env
        .admin(
            Method::PUT,
            &format!("/admin/claude-console-accounts/{preferred}/toggle-schedulable"),
            None,
        )
        .await;
    assert_eq!((s, &v["schedulable"]), (200, &json!(false)));
    let r = env
        .messages(&key, msg_body("m", false, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(last_key(), "sk-ant-second");

    // Deleting the bound account puts its keys back on the shared pool.
    let (s, v) = env
        .admin(
            Method::DELETE,
            &format!("/admin/claude-console-accounts/{backup}"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["unboundKeys"], 1);
    env.admin(
        Method::PUT,
        &format!("/admin/claude-console-accounts/{preferred}/toggle-schedulable"),
        None,
    )
    .await;
    let r = env
        .messages(&bound, msg_body("m", false, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(last_key(), UPSTREAM_KEY);
    env.stop().await;
}
