//! Sign-in with OpenID Connect through the `openidconnect` crate: discovery from the issuer URL,
//! the authorisation code flow with PKCE (S256), `state` and `nonce`, and the ID token's
//! signature, issuer, audience, expiry and nonce checked before anyone is signed in. Client
//! authentication by client secret (basic) or `private_key_jwt` signed with the broker's key.

use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, Client, ClientId, ClientSecret, CsrfToken, EmptyExtraTokenFields,
    EndSessionUrl, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields, IssuerUrl, LogoutRequest, Nonce,
    PkceCodeChallenge, PkceCodeVerifier, PostLogoutRedirectUrl, ProviderMetadataWithLogout, RedirectUrl, Scope,
    StandardErrorResponse, StandardTokenResponse, TokenResponse as _,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::RwLock;
use vpr_app::services::people::Person;

/// How the console authenticates to the identity provider's token endpoint.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// `client_secret_basic`.
    Secret(String),
    /// `private_key_jwt`, signed with the broker's current signing key (the identity provider
    /// reads the broker's `/.well-known/jwks.json`).
    PrivateKeyJwt,
}

/// The console's settings, from the `[console]` configuration.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// The identity provider's issuer URL (discovery at `/.well-known/openid-configuration`).
    pub issuer: String,
    /// The console's client id at the identity provider.
    pub client_id: String,
    /// Its client authentication.
    pub client_auth: ClientAuth,
    /// The broker's public base URL (the callback and the signed-out page are under it).
    pub public_url: String,
    /// The ID-token claim naming the person's organisation (an ODS code).
    pub org_claim: String,
    /// The ID-token claim naming the person's console role.
    pub role_claim: String,
    /// Scopes asked for besides `openid`.
    pub scopes: Vec<String>,
    /// A session ends after this long without a request.
    pub idle_timeout: Duration,
    /// A session ends this long after sign-in whatever happens.
    pub absolute_lifetime: Duration,
}

impl ConsoleSettings {
    /// The callback the identity provider redirects to.
    pub fn redirect_url(&self) -> String {
        format!("{}/console/callback", self.public_url)
    }

    /// Where the identity provider sends the person after signing out.
    pub fn signed_out_url(&self) -> String {
        format!("{}/console/signed-out", self.public_url)
    }
}

/// The ID token's claims beyond the standard ones (the organisation and role claims are
/// configurable, so they are kept by name).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OtherClaims {
    #[serde(flatten)]
    other: Map<String, Value>,
}
impl AdditionalClaims for OtherClaims {}

type IdFields = IdTokenFields<
    OtherClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type Tokens = StandardTokenResponse<IdFields, CoreTokenType>;
type OidcClient = Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The provider as discovered.
struct Discovered {
    client: OidcClient,
    token_endpoint: Option<String>,
    end_session: Option<EndSessionUrl>,
    at: Instant,
}

/// Provider metadata (and its keys) are discovered again after this long, or sooner when an ID
/// token is signed with a key not yet known.
const REDISCOVER_AFTER: Duration = Duration::from_secs(3600);

/// The shortest time between two discoveries forced by an unknown key.
const MIN_REDISCOVERY: Duration = Duration::from_secs(30);

/// The identity provider, discovered lazily: a provider that is down never stops the broker
/// starting, and the console says so on its sign-in page.
pub struct Provider {
    settings: ConsoleSettings,
    http: reqwest::Client,
    discovered: RwLock<Option<Discovered>>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider").field("issuer", &self.settings.issuer).finish_non_exhaustive()
    }
}

/// Why a sign-in failed, for the page the person sees (the detail goes to the log and audit).
#[derive(Debug, Clone)]
pub struct SignInFailure(pub String);

impl From<String> for SignInFailure {
    fn from(s: String) -> Self {
        Self(s)
    }
}

/// Where to send the browser to sign in, and what to keep until it returns.
#[derive(Debug, Clone)]
pub struct Authorization {
    /// The identity provider's authorisation URL.
    pub url: String,
    /// `state`.
    pub state: String,
    /// `nonce`.
    pub nonce: String,
    /// The PKCE verifier.
    pub verifier: String,
}

/// What a verified ID token says, and the token itself (the hint for signing out).
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The person.
    pub person: Person,
    /// The ID token as received.
    pub id_token: String,
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

impl Provider {
    /// A provider for `settings`; nothing is fetched yet.
    pub fn new(settings: ConsoleSettings) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        IssuerUrl::new(settings.issuer.clone()).map_err(|e| format!("`console.issuer`: {e}"))?;
        RedirectUrl::new(settings.redirect_url()).map_err(|e| format!("`public_url`: {e}"))?;
        Ok(Self { settings, http, discovered: RwLock::new(None) })
    }

    /// The settings.
    pub fn settings(&self) -> &ConsoleSettings {
        &self.settings
    }

    /// Discovers the provider if it has not been, or was long ago (or `force`, at most every
    /// [`MIN_REDISCOVERY`]).
    async fn discover(&self, force: bool) -> Result<(), SignInFailure> {
        {
            let d = self.discovered.read().await;
            if let Some(d) = d.as_ref() {
                let age = d.at.elapsed();
                if age < REDISCOVER_AFTER && (!force || age < MIN_REDISCOVERY) {
                    return Ok(());
                }
            }
        }
        let issuer = IssuerUrl::new(self.settings.issuer.clone()).map_err(|e| SignInFailure(e.to_string()))?;
        let metadata = ProviderMetadataWithLogout::discover_async(issuer, &self.http)
            .await
            .map_err(|e| SignInFailure(format!("cannot discover the identity provider: {}", chain(&e))))?;
        let end_session = metadata.additional_metadata().end_session_endpoint.clone();
        let token_endpoint = metadata.token_endpoint().map(|u| u.to_string());
        let secret = match &self.settings.client_auth {
            ClientAuth::Secret(s) => Some(ClientSecret::new(s.clone())),
            ClientAuth::PrivateKeyJwt => None,
        };
        let redirect = RedirectUrl::new(self.settings.redirect_url()).map_err(|e| SignInFailure(e.to_string()))?;
        let client =
            OidcClient::from_provider_metadata(metadata, ClientId::new(self.settings.client_id.clone()), secret)
                .set_redirect_uri(redirect);
        *self.discovered.write().await = Some(Discovered { client, token_endpoint, end_session, at: Instant::now() });
        Ok(())
    }

    /// Begins a sign-in: the authorisation URL with PKCE, `state` and `nonce`.
    pub async fn authorize(&self) -> Result<Authorization, SignInFailure> {
        self.discover(false).await?;
        let guard = self.discovered.read().await;
        let d = guard.as_ref().ok_or_else(|| SignInFailure("the identity provider is not discovered".into()))?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request =
            d.client.authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random);
        for scope in &self.settings.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        Ok(Authorization {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges `code` (with the PKCE verifier) and verifies the ID token against `nonce`;
    /// `assertion` makes a `private_key_jwt` for the token endpoint when that is configured.
    pub async fn finish(
        &self,
        code: &str,
        verifier: &str,
        nonce: &str,
        assertion: impl Fn(&str) -> Result<String, String>,
    ) -> Result<SignedIn, SignInFailure> {
        self.discover(false).await?;
        let tokens = self.exchange(code, verifier, &assertion).await?;
        let Some(id_token) = tokens.id_token() else {
            return Err(SignInFailure("the identity provider sent no ID token".into()));
        };
        let claims = match self.verify(id_token, nonce).await {
            Err(e) if e.0.contains("signing key") || e.0.contains("signature") => {
                // Perhaps the provider rotated its keys: discover again (rate-limited) and retry.
                self.discover(true).await?;
                self.verify(id_token, nonce).await?
            }
            other => other?,
        };
        let person = self.person(&claims)?;
        Ok(SignedIn { person, id_token: id_token.to_string() })
    }

    async fn exchange(
        &self,
        code: &str,
        verifier: &str,
        assertion: &impl Fn(&str) -> Result<String, String>,
    ) -> Result<Tokens, SignInFailure> {
        let guard = self.discovered.read().await;
        let d = guard.as_ref().ok_or_else(|| SignInFailure("the identity provider is not discovered".into()))?;
        let mut request = d
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| SignInFailure(format!("the identity provider has no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()));
        if let ClientAuth::PrivateKeyJwt = self.settings.client_auth {
            let endpoint = d.token_endpoint.clone().unwrap_or_default();
            let jwt = assertion(&endpoint).map_err(SignInFailure)?;
            request = request
                .add_extra_param("client_assertion_type", vpr_auth::tokens::JWT_BEARER)
                .add_extra_param("client_assertion", jwt);
        }
        request
            .request_async(&self.http)
            .await
            .map_err(|e| SignInFailure(format!("the identity provider refused the code: {}", chain(&e))))
    }

    async fn verify(
        &self,
        id_token: &openidconnect::IdToken<
            OtherClaims,
            CoreGenderClaim,
            CoreJweContentEncryptionAlgorithm,
            CoreJwsSigningAlgorithm,
        >,
        nonce: &str,
    ) -> Result<openidconnect::IdTokenClaims<OtherClaims, CoreGenderClaim>, SignInFailure> {
        let guard = self.discovered.read().await;
        let d = guard.as_ref().ok_or_else(|| SignInFailure("the identity provider is not discovered".into()))?;
        // Asymmetric signatures only: a token signed with the client secret proves less.
        let verifier = d.client.id_token_verifier().set_allowed_algs([
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            CoreJwsSigningAlgorithm::RsaSsaPssSha256,
            CoreJwsSigningAlgorithm::EcdsaP256Sha256,
            CoreJwsSigningAlgorithm::EcdsaP384Sha384,
            CoreJwsSigningAlgorithm::EdDsa,
        ]);
        id_token
            .claims(&verifier, &Nonce::new(nonce.to_owned()))
            .cloned()
            .map_err(|e| SignInFailure(format!("the ID token is not valid: {}", chain(&e))))
    }

    /// The person the claims describe: subject, name, and the configured organisation and role
    /// claims (each a string).
    fn person(
        &self,
        claims: &openidconnect::IdTokenClaims<OtherClaims, CoreGenderClaim>,
    ) -> Result<Person, SignInFailure> {
        let text = |name: &str| -> Result<String, SignInFailure> {
            claims
                .additional_claims()
                .other
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| SignInFailure(format!("the ID token has no `{name}` claim (a string)")))
        };
        let name = claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.as_str().to_owned())
            .or_else(|| claims.preferred_username().map(|u| u.as_str().to_owned()))
            .unwrap_or_else(|| claims.subject().as_str().to_owned());
        Ok(Person {
            issuer: claims.issuer().as_str().to_owned(),
            subject: claims.subject().as_str().to_owned(),
            name,
            org: text(&self.settings.org_claim)?,
            role: text(&self.settings.role_claim)?,
        })
    }

    /// Where to send the browser to sign out at the identity provider too (RP-initiated
    /// logout), or `None` if it offers no end-session endpoint.
    pub async fn sign_out_url(&self, id_token: &str, state: &str) -> Option<String> {
        let guard = self.discovered.read().await;
        let d = guard.as_ref()?;
        let end = d.end_session.clone()?;
        let redirect = PostLogoutRedirectUrl::new(self.settings.signed_out_url()).ok()?;
        let mut request = LogoutRequest::from(end)
            .set_client_id(ClientId::new(self.settings.client_id.clone()))
            .set_post_logout_redirect_uri(redirect)
            .set_state(CsrfToken::new(state.to_owned()));
        if let Ok(hint) = id_token.parse::<openidconnect::IdToken<
            OtherClaims,
            CoreGenderClaim,
            CoreJweContentEncryptionAlgorithm,
            CoreJwsSigningAlgorithm,
        >>() {
            request = request.set_id_token_hint(&hint);
        }
        Some(request.http_get_url().to_string())
    }

    /// The issuer's origin (scheme, host and port), for the pages' `form-action`.
    pub fn issuer_origin(&self) -> String {
        let url = &self.settings.issuer;
        match url.find("://").map(|i| i + 3) {
            Some(start) => {
                let rest = url.get(start..).unwrap_or_default();
                let end = rest.find('/').unwrap_or(rest.len());
                format!("{}{}", url.get(..start).unwrap_or_default(), rest.get(..end).unwrap_or_default())
            }
            None => url.clone(),
        }
    }
}
