//! The HTTP client that delivers webhooks, held to the egress policy of `core::egress`: its
//! resolver returns only allowed addresses (so the address checked is the address connected to;
//! DNS cannot rebind in between), IP-literal URLs (which skip resolvers) are checked before
//! sending, no proxy can reroute it, and redirects are not followed. A failed attempt is told
//! to the tenant as one of the fixed [`DeliveryFailure`] texts; the details are only logged.

use std::{error::Error as _, sync::Arc, time::Duration};

use governance_core::{
    egress::{self, EgressPolicy, ResolveError},
    webhooks::DeliveryFailure,
};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// How long one webhook attempt may take.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Resolves names to the addresses the policy allows; an error when there are none.
struct CheckedResolver {
    policy: EgressPolicy,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            // The port is set by the connector; 0 is a placeholder.
            let addrs = egress::resolve_allowed(&policy, name.as_str(), 0).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// A webhook client and the policy it enforces.
#[derive(Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    policy: EgressPolicy,
}

impl WebhookClient {
    /// A bounded wait per attempt, no redirects (an endpoint is the URL it was registered
    /// with), no proxy, and only addresses `policy` allows.
    pub fn new(policy: EgressPolicy) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(WEBHOOK_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(CheckedResolver {
                policy: policy.clone(),
            }))
            .user_agent(concat!("governance-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, policy })
    }

    /// POST `body` to `url` with `headers`. Returns the answer's status, or why there was none.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: String,
    ) -> Result<u16, DeliveryFailure> {
        let parsed = reqwest::Url::parse(url).map_err(|err| {
            tracing::warn!(url, %err, "webhook: stored endpoint URL does not parse");
            DeliveryFailure::Refused
        })?;
        if let Err(refusal) = egress::check_literal(&self.policy, &parsed) {
            tracing::warn!(url, %refusal, "webhook: delivery refused by the egress policy");
            return Err(DeliveryFailure::Refused);
        }
        let mut request = self.http.post(parsed).body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        match request.send().await {
            Ok(response) => Ok(response.status().as_u16()),
            Err(err) => {
                let failure = classify(&err);
                tracing::warn!(url, ?failure, error = %chain(&err), "webhook: delivery failed");
                Err(failure)
            }
        }
    }
}

/// What the tenant is told about a failed send.
fn classify(err: &reqwest::Error) -> DeliveryFailure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = err.source();
    while let Some(cause) = source {
        if let Some(ResolveError::Refused { .. }) = cause.downcast_ref::<ResolveError>() {
            return DeliveryFailure::Refused;
        }
        source = cause.source();
    }
    if err.is_timeout() {
        DeliveryFailure::TimedOut
    } else {
        DeliveryFailure::CouldNotConnect
    }
}

/// An error with its causes, for the server's log.
fn chain(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    // Only loopback names and literals: a refused address is refused before any connection,
    // so nothing is sent anywhere.
    #[tokio::test]
    async fn refused_targets_are_refused_before_connecting() {
        let client = WebhookClient::new(EgressPolicy::default()).unwrap();
        for url in [
            "http://localhost:9/",
            "http://127.0.0.1:9/",
            "http://[::1]:9/",
            "http://[::ffff:127.0.0.1]:9/",
            "http://10.0.0.1/",
            "http://169.254.169.254/latest",
        ] {
            assert_eq!(
                client.post(url, &[], String::new()).await,
                Err(DeliveryFailure::Refused),
                "{url}"
            );
        }
    }

    #[tokio::test]
    async fn allowed_targets_are_delivered_to() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let _ = socket
                .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                .await;
        });
        let client =
            WebhookClient::new(EgressPolicy::from_cidrs(&["127.0.0.0/8"]).unwrap()).unwrap();
        // By name: `localhost` may also resolve to ::1, which this policy drops.
        let status = client
            .post(&format!("http://localhost:{port}/"), &[], "{}".into())
            .await;
        assert_eq!(status, Ok(204));
    }
}
