//! A small partner client: authenticates to the broker as one demo partner system with a signed
//! JWT client assertion (OAuth2 client credentials, `private_key_jwt`), publishes a notice and
//! reads it back.
//!
//! ```text
//! cargo run --example publish_notice -- --broker http://127.0.0.1:8080 \
//!     --client-id northmoor-cad --key examples/demo-ics/keys/northmoor-cad.DEMO-ONLY.jwk
//! ```

use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use clap::Parser;
use josekit::jwk::Jwk;
use josekit::jws::{JwsHeader, ES256};
use josekit::jwt::{self, JwtPayload};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
struct Args {
    /// The broker's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    broker: String,
    /// This system's OAuth client id in the partner registry.
    #[arg(long, default_value = "northmoor-cad")]
    client_id: String,
    /// This system's private signing key (JWK).
    #[arg(long, default_value = "examples/demo-ics/keys/northmoor-cad.DEMO-ONLY.jwk")]
    key: String,
    /// Only print a fresh client assertion (for use with curl) and exit.
    #[arg(long)]
    assertion_only: bool,
}

fn client_assertion(args: &Args, token_endpoint: &str) -> Result<String> {
    let mut key: serde_json::Map<String, Value> = serde_json::from_str(&std::fs::read_to_string(&args.key)?)?;
    key.remove("demo_only");
    let jwk = Jwk::from_map(key)?;
    let now = SystemTime::now();
    let mut claims = JwtPayload::new();
    claims.set_issuer(&args.client_id);
    claims.set_subject(&args.client_id);
    claims.set_audience(vec![token_endpoint]);
    claims.set_issued_at(&now);
    claims.set_expires_at(&(now + Duration::from_secs(60)));
    claims.set_jwt_id(uuid::Uuid::new_v4().to_string());
    Ok(jwt::encode_with_signer(&claims, &JwsHeader::new(), &ES256.signer_from_jwk(&jwk)?)?)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let http = reqwest::blocking::Client::new();
    let token_endpoint = format!("{}/oauth2/token", args.broker);
    let assertion = client_assertion(&args, &token_endpoint)?;
    if args.assertion_only {
        println!("{assertion}");
        return Ok(());
    }
    let resp = http
        .post(&token_endpoint)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", assertion.as_str()),
        ])
        .send()
        .context("token request")?;
    if !resp.status().is_success() {
        bail!("token refused: {}", resp.text()?);
    }
    let token: Value = resp.json()?;
    let access = token.get("access_token").and_then(Value::as_str).context("no access token")?;
    println!("authenticated as {} with scopes: {}", args.client_id, token.get("scope").unwrap_or(&Value::Null));

    let today = chrono::Utc::now().date_naive();
    let notice = json!({
        "subject": {"address": {"postcode": "ZZ99 3WZ", "line1": "17 Marrowbone Crescent"}},
        "category": "threat-with-weapon",
        "risk_level": "high",
        "safety_advice": ["attend-with-police", "weapons-reported"],
        "advice_text": "Knife produced at crew on last attendance. Stage until police on scene.",
        "incident_date": (today - chrono::Duration::days(2)).to_string(),
        "review_date": (today + chrono::Duration::days(180)).to_string(),
        "subject_informed": {"withheld_because": "informing would put staff at risk"},
        "lawful_basis": ["UKGDPR-6-1-c", "UKGDPR-9-2-h"]
    });
    let resp = http
        .post(format!("{}/v1/notices", args.broker))
        .bearer_auth(access)
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&notice)
        .send()?;
    let status = resp.status();
    let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let body: Value = resp.json()?;
    if status.as_u16() != 201 {
        bail!("publish refused ({status}): {body:#}");
    }
    println!("published {location} (version {})", body.get("version").unwrap_or(&Value::Null));
    let read: Value = http.get(format!("{}{location}", args.broker)).bearer_auth(access).send()?.json()?;
    println!("{}", serde_json::to_string_pretty(&read)?);
    Ok(())
}
