//! GraphiQL as a newcomer opens it: in a real browser (headless Chromium), on a machine whose
//! only reachable address is the service's own.

use crate::helpers::spawn_app;

#[tokio::test]
async fn graphiql_renders_from_the_binary_with_no_other_host_reachable() {
    let app = spawn_app().await;
    let profile = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.path().display()),
            // No other host: names do not resolve, and anything not on loopback goes to a
            // proxy that is not there.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--proxy-server=http://127.0.0.1:9",
            "--proxy-bypass-list=127.0.0.1",
            "--virtual-time-budget=20000",
            "--dump-dom",
            &app.url("/graphql"),
        ])
        .output()
        .await
        .expect("chromium (apt-get install chromium; scripts/test installs it when run as root)");
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // React rendered GraphiQL: its container, the query editor holding our default query, and
    // the headers panel a newcomer puts the key in.
    assert!(dom.contains("graphiql-container"), "{dom}");
    assert!(dom.contains("graphiql-query-editor"), "{dom}");
    assert!(dom.contains("paste your API key here"), "{dom}");
    assert!(!dom.contains("Loading GraphiQL"), "{dom}");

    // The assets are served compressed, cacheable for good, from this version's path only.
    let asset = app
        .http()
        .get(app.url(&format!(
            "/graphiql/{}/graphiql.min.js",
            governance_api::graphiql::VERSION
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(asset.status().as_u16(), 200);
    assert!(
        asset.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert!(asset.text().await.unwrap().contains("GraphiQL"));
    let other = app
        .http()
        .get(app.url("/graphiql/0.0.1/graphiql.min.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 404);
}
