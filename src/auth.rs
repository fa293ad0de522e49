//! Bearer JWT verification and minting. Every route turns a request into a [`Principal`] here.

use std::{net::IpAddr, num::NonZeroU32, sync::Arc, time::Duration};

use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    state::keyed::DefaultKeyedStateStore,
};

use axum::http::{HeaderMap, header};
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode, errors::ErrorKind,
};
use serde::{Deserialize, Serialize};

use crate::{
    config::{JwtConfig, JwtKey, RateLimit},
    error::{AuthFailure, Error},
    settings::Store,
};

/// Who is calling: the verified claims of the bearer token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`; also the id of the user's row.
    pub user_id: String,
    pub email: Option<String>,
    pub roles: Vec<String>,
    /// The OAuth scopes the token was granted, when it carries a `scope` claim. Without one the
    /// token may do everything its user may.
    pub permissions: Option<Vec<String>>,
    /// When the token stops being accepted (its `exp` plus the leeway), in seconds since the
    /// Unix epoch: a WebSocket authenticated by it closes then.
    pub expires_at: u64,
}

/// What a request does with settings, for tokens limited by OAuth scopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    pub fn scope(self) -> &'static str {
        match self {
            Access::Read => "settings:read",
            Access::Write => "settings:write",
        }
    }
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|role| role == "admin")
    }

    /// The user whose settings a request is about: the caller's own when `user_id` is absent
    /// or names the caller; another user's only for an administrator.
    pub fn acting_on<'a>(&'a self, user_id: Option<&'a str>) -> Result<&'a str, Error> {
        match user_id {
            None => Ok(&self.user_id),
            Some(id) if id == self.user_id || self.is_admin() => Ok(id),
            Some(_) => Err(Error::Forbidden(
                "another user's settings need the admin role".into(),
            )),
        }
    }

    /// FORBIDDEN when the token's scopes do not cover `access`.
    pub fn require(&self, access: Access) -> Result<(), Error> {
        match &self.permissions {
            Some(granted) if !granted.iter().any(|scope| scope == access.scope()) => {
                Err(Error::Forbidden(format!(
                    "the token's scope does not include `{}`",
                    access.scope()
                )))
            }
            _ => Ok(()),
        }
    }
}

/// The `aud` claim: one audience, or an array of them (RFC 7519, section 4.1.3). jsonwebtoken
/// checks it against the configured audience.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AudienceClaim {
    One(String),
    Many(Vec<String>),
}

/// The OAuth `scope` claim: a space-separated string (RFC 8693), or an array of strings.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ScopeClaim {
    Text(String),
    List(Vec<String>),
}

impl ScopeClaim {
    fn into_scopes(self) -> Vec<String> {
        match self {
            ScopeClaim::Text(text) => text.split_whitespace().map(str::to_owned).collect(),
            ScopeClaim::List(list) => list,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<AudienceClaim>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<ScopeClaim>,
}

/// Checks bearer tokens against the one configured key and algorithm.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    /// Tokens verified lately, by their whole text (signature included), so that a client's
    /// next request with the same token skips the signature and claims checks; its expiry is
    /// still checked every time.
    verified: moka::sync::Cache<String, Principal>,
}

/// How many verified tokens are remembered, and for how long at most.
const VERIFIED_TOKENS: u64 = 10_000;
const VERIFIED_FOR: Duration = Duration::from_secs(300);

impl Verifier {
    pub fn new(config: &JwtConfig, key: &JwtKey) -> anyhow::Result<Self> {
        let algorithm = key.algorithm();
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &config.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                validation.required_spec_claims.insert("iss".into());
            }
            None => validation.iss = None,
        }
        match &config.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        Ok(Verifier {
            key: key.decoding_key()?,
            validation,
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_TOKENS)
                .time_to_live(VERIFIED_FOR)
                .build(),
        })
    }

    /// Verifies the `Authorization: Bearer` header of a request. The scheme is
    /// case-insensitive (RFC 7235); two `Authorization` headers are ambiguous and refused.
    pub fn verify_headers(&self, headers: &HeaderMap) -> Result<Principal, Error> {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let value = values
            .next()
            .ok_or(Error::Unauthenticated(AuthFailure::Missing))?;
        let malformed = Error::Unauthenticated(AuthFailure::Malformed);
        if values.next().is_some() {
            return Err(malformed);
        }
        let token = value
            .to_str()
            .ok()
            .and_then(|text| text.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty())
            .ok_or(malformed)?;
        self.verify(token)
    }

    pub fn verify(&self, token: &str) -> Result<Principal, Error> {
        if let Some(principal) = self.verified.get(token) {
            // As jsonwebtoken judges `exp`: usable through the leeway's last second.
            if jsonwebtoken::get_current_timestamp() <= principal.expires_at {
                return Ok(principal);
            }
            self.verified.invalidate(token);
            return Err(Error::Unauthenticated(AuthFailure::Expired));
        }
        let principal = self.verify_anew(token)?;
        self.verified.insert(token.to_owned(), principal.clone());
        Ok(principal)
    }

    fn verify_anew(&self, token: &str) -> Result<Principal, Error> {
        let data = decode::<Claims>(token, &self.key, &self.validation).map_err(|err| {
            let failure = match err.kind() {
                ErrorKind::ExpiredSignature => AuthFailure::Expired,
                ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
                _ => AuthFailure::Invalid,
            };
            tracing::debug!(error = %err, "bearer token rejected");
            Error::Unauthenticated(failure)
        })?;
        // This service understands no JWS extension, so any critical one (RFC 7515, section
        // 4.1.11) makes the token unusable.
        if data.header.crit.is_some() {
            tracing::debug!("bearer token rejected: it names critical header extensions");
            return Err(Error::Unauthenticated(AuthFailure::Invalid));
        }
        let claims = data.claims;
        // A user id is printable text with something in it, of up to the 255 characters the
        // users table holds; an email of up to 320, without control characters (PostgreSQL
        // cannot store NUL at all).
        let sub = &claims.sub;
        let sub_usable = !sub.trim().is_empty()
            && sub.chars().count() <= 255
            && !sub.chars().any(char::is_control);
        let email_usable = claims
            .email
            .as_ref()
            .is_none_or(|e| e.chars().count() <= 320 && !e.chars().any(char::is_control));
        if !sub_usable || !email_usable {
            return Err(Error::Unauthenticated(AuthFailure::Invalid));
        }
        Ok(Principal {
            user_id: claims.sub,
            email: claims.email,
            roles: claims.roles,
            permissions: claims.scope.map(ScopeClaim::into_scopes),
            expires_at: claims.exp.saturating_add(self.validation.leeway),
        })
    }
}

/// Mints tokens: for `settings-api token`, the development token, and tests.
pub struct Issuer {
    key: EncodingKey,
    header: Header,
    issuer: Option<String>,
    audience: Option<String>,
}

/// What a minted token says about its user.
#[derive(Clone, Debug, Default)]
pub struct TokenRequest {
    pub sub: String,
    pub email: Option<String>,
    pub roles: Vec<String>,
    /// OAuth scopes, space-separated; `None` leaves the claim out.
    pub scope: Option<String>,
    pub ttl: Duration,
}

impl Issuer {
    /// An issuer for HS256 secrets, or for an asymmetric algorithm given its private key in PEM.
    pub fn new(
        config: &JwtConfig,
        key: &JwtKey,
        private_pem: Option<&[u8]>,
    ) -> anyhow::Result<Self> {
        let algorithm = key.algorithm();
        let key = match (key, private_pem) {
            (JwtKey::Secret(secret), _) => EncodingKey::from_secret(secret.expose().as_bytes()),
            (JwtKey::PublicKey { .. }, None) => anyhow::bail!(
                "a {algorithm:?} token is signed with the private key: pass --private-key FILE"
            ),
            (JwtKey::PublicKey { .. }, Some(pem)) => match algorithm {
                Algorithm::RS256 => EncodingKey::from_rsa_pem(pem)?,
                Algorithm::ES256 => EncodingKey::from_ec_pem(pem)?,
                _ => EncodingKey::from_ed_pem(pem)?,
            },
        };
        Ok(Issuer {
            key,
            header: Header::new(algorithm),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
        })
    }

    pub fn mint(&self, request: &TokenRequest) -> anyhow::Result<String> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: request.sub.clone(),
            exp: now + request.ttl.as_secs(),
            nbf: None,
            iat: Some(now),
            iss: self.issuer.clone(),
            aud: self.audience.clone().map(AudienceClaim::One),
            email: request.email.clone(),
            roles: request.roles.clone(),
            scope: request.scope.clone().map(ScopeClaim::Text),
        };
        Ok(encode(&self.header, &claims, &self.key)?)
    }
}

/// Requests per user, by the generic cell rate algorithm.
pub type UserRateLimiter = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;
/// Requests per client address, before authentication.
pub type IpRateLimiter = RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock>;

fn keyed_limiter<K: Clone + Eq + std::hash::Hash>(
    per_minute: u32,
    burst: u32,
) -> Option<Arc<RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>>> {
    NonZeroU32::new(per_minute).map(|per_minute| {
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Arc::new(RateLimiter::keyed(
            Quota::per_minute(per_minute).allow_burst(burst),
        ))
    })
}

/// RATE_LIMITED, with the wait, when `key` is over its rate.
fn check_key<K: Clone + Eq + std::hash::Hash>(
    limiter: Option<&RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>>,
    key: &K,
    by: &'static str,
) -> Result<(), Error> {
    let Some(limiter) = limiter else {
        return Ok(());
    };
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        metrics::counter!("settings_api_rate_limited_total", "by" => by).increment(1);
        Error::RateLimited {
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
        }
    })
}

/// Turns a request's headers into a [`Principal`], the one way every interface authenticates:
/// the bearer token is verified, the user's rate checked, and the user's row created on first
/// sight.
#[derive(Clone)]
pub struct Authenticator {
    verifier: Arc<Verifier>,
    store: Arc<Store>,
    limiter: Option<Arc<UserRateLimiter>>,
    ip_limiter: Option<Arc<IpRateLimiter>>,
}

impl Authenticator {
    pub fn new(verifier: Verifier, store: Arc<Store>, rate: &RateLimit) -> Self {
        Authenticator {
            verifier: Arc::new(verifier),
            store,
            limiter: keyed_limiter(rate.per_minute, rate.burst),
            ip_limiter: keyed_limiter(rate.per_ip_per_minute, rate.per_ip_burst),
        }
    }

    /// Lets the limiters forget the users and addresses that went quiet.
    pub fn forget_quiet_callers(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.ip_limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// The caller of a request, from its `Authorization` header.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, Error> {
        self.check_client()?;
        let principal = self.verify_headers(headers)?;
        tracing::Span::current().record("user_id", principal.user_id.as_str());
        check_key(self.limiter.as_deref(), &principal.user_id, "user")?;
        self.admit(&principal).await?;
        Ok(principal)
    }

    /// RATE_LIMITED when the request's client address is over its rate: before the token is
    /// even looked at, so that a flood of bad tokens is cheap to refuse.
    pub fn check_client(&self) -> Result<(), Error> {
        match crate::telemetry::client_ip() {
            Some(ip) => check_key(self.ip_limiter.as_deref(), &ip, "ip"),
            None => Ok(()),
        }
    }

    /// Verifies the token of `headers` without touching the database: for a WebSocket, whose
    /// token may come with the upgrade or later in `connection_init`.
    pub fn verify_headers(&self, headers: &HeaderMap) -> Result<Principal, Error> {
        self.verifier.verify_headers(headers)
    }

    /// Makes sure the verified caller's user row exists and holds the token's claims.
    pub async fn admit(&self, principal: &Principal) -> Result<(), Error> {
        self.store
            .ensure_user(
                &principal.user_id,
                principal.email.as_deref(),
                &principal.roles,
            )
            .await
    }
}
