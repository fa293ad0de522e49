//! Configuration, read once from environment variables at start-up.

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use anyhow::{Context, bail};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Everything the service reads from its environment. Built once; cloned into the app state.
#[derive(Clone)]
pub struct Config {
    pub database_url: String,
    pub database_max_connections: u32,
    pub bind_addr: SocketAddr,
    pub app_env: AppEnv,
    pub log_format: LogFormat,
    pub jwt: JwtConfig,
    pub limits: Limits,
    pub conveniences: Conveniences,
    pub catalog: CatalogConfig,
    pub history: HistoryConfig,
    pub rest_scopes: RestScopes,
    pub cors: CorsOrigins,
    /// The bearer token `GET /metrics` requires, when set.
    pub metrics_token: Option<Secret>,
    pub rate_limit: RateLimit,
    pub shutdown_timeout: Duration,
    pub connections: ConnectionLimits,
}

/// What one client connection may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once (WebSockets included); lowered at start-up to what the
    /// file-descriptor limit allows.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers; also how long a keep-alive
    /// connection may stay idle.
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body.
    pub body_timeout: Duration,
}

/// Requests one user may make: a sustained rate and a burst above it; 0 per minute is off.
/// The same for one client address, counted before authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub per_minute: u32,
    pub burst: u32,
    pub per_ip_per_minute: u32,
    pub per_ip_burst: u32,
}

/// Which browser origins may call the API (`CORS_ALLOWED_ORIGINS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No cross-origin access: the production default.
    None,
    /// Any origin, without credentials: the development default.
    Any,
    /// Exactly these origins (`scheme://host[:port]`), credentials allowed.
    Exactly(Vec<String>),
}

impl CorsOrigins {
    fn parse(text: &str) -> anyhow::Result<Self> {
        match text.trim() {
            "*" => return Ok(CorsOrigins::Any),
            "none" => return Ok(CorsOrigins::None),
            _ => {}
        }
        let origins = text
            .split(',')
            .map(str::trim)
            .filter(|origin| !origin.is_empty())
            .map(|origin| {
                let plain = origin.split_once("://").is_some_and(|(scheme, host)| {
                    matches!(scheme, "http" | "https")
                        && !host.is_empty()
                        && !host.contains(['/', '?', '#', ' '])
                });
                if !plain {
                    bail!(
                        "CORS_ALLOWED_ORIGINS takes `*`, `none` or origins such as \
                         https://app.example.com, not `{origin}`"
                    );
                }
                Ok(origin.to_owned())
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if origins.is_empty() {
            bail!("CORS_ALLOWED_ORIGINS names no origin; use `none` to allow none");
        }
        Ok(CorsOrigins::Exactly(origins))
    }
}

/// The scope each legacy REST contract reads and writes (`REST_SCOPES`). Contracts bound to
/// one scope share its data and the union of their types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestScopes {
    pub c000: String,
    pub c001: String,
    /// Contract 002's scope when a request names no `space`.
    pub c002: String,
    pub c003: String,
    pub c004: String,
}

impl Default for RestScopes {
    /// The free-form contracts share the default scope with GraphQL, where today's data lives;
    /// the typed contracts each have their own, so their types never meet free-form values.
    fn default() -> Self {
        RestScopes {
            c000: String::new(),
            c001: String::new(),
            c002: String::new(),
            c003: "contract-003".into(),
            c004: "contract-004".into(),
        }
    }
}

impl RestScopes {
    /// Each contract's number with its scope.
    pub fn by_contract(&self) -> [(&'static str, &str); 5] {
        [
            ("000", &self.c000),
            ("001", &self.c001),
            ("002", &self.c002),
            ("003", &self.c003),
            ("004", &self.c004),
        ]
    }

    /// `REST_SCOPES`: a JSON object of contract numbers to scopes; contracts it leaves out
    /// keep their default.
    fn parse(text: &str) -> anyhow::Result<Self> {
        let bindings: std::collections::BTreeMap<String, String> = serde_json::from_str(text)
            .with_context(|| {
                format!(
                    "REST_SCOPES must be a JSON object of contract numbers to scope names, such \
                     as {{\"003\": \"\", \"004\": \"\"}}, not `{text}`"
                )
            })?;
        let mut scopes = RestScopes::default();
        for (contract, scope) in bindings {
            let slot = match contract.as_str() {
                "000" => &mut scopes.c000,
                "001" => &mut scopes.c001,
                "002" => &mut scopes.c002,
                "003" => &mut scopes.c003,
                "004" => &mut scopes.c004,
                other => bail!("REST_SCOPES names `{other}`; the contracts are 000 to 004"),
            };
            *slot = scope;
        }
        Ok(scopes)
    }
}

#[derive(Clone, Debug)]
pub struct HistoryConfig {
    /// Changes kept per setting; 0 keeps all.
    pub keep_versions: u32,
    /// Days a change is kept; 0 keeps it forever.
    pub keep_days: u32,
    /// How often pruning runs.
    pub prune_interval: Duration,
    /// How often expired values are purged and their expiry recorded.
    pub expiry_purge_interval: Duration,
}

#[derive(Clone, Debug, Default)]
pub struct CatalogConfig {
    /// An operator's catalog file, adding keys to or overriding the built-in catalog.
    pub file: Option<PathBuf>,
    /// Refuse keys that the catalog does not know.
    pub strict: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Clone)]
pub struct JwtConfig {
    pub key: Option<JwtKey>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
}

/// The one key (and so the one algorithm) that tokens are verified with.
#[derive(Clone)]
pub enum JwtKey {
    /// HS256 with a shared secret.
    Secret(Secret),
    /// RS256, ES256 or EdDSA with a PEM public key.
    PublicKey { algorithm: Algorithm, pem: Vec<u8> },
}

impl JwtKey {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            JwtKey::Secret(_) => Algorithm::HS256,
            JwtKey::PublicKey { algorithm, .. } => *algorithm,
        }
    }

    /// The key that verifies signatures.
    pub fn decoding_key(&self) -> jsonwebtoken::errors::Result<DecodingKey> {
        match self {
            JwtKey::Secret(secret) => Ok(DecodingKey::from_secret(secret.expose().as_bytes())),
            JwtKey::PublicKey { algorithm, pem } => match algorithm {
                Algorithm::RS256 => DecodingKey::from_rsa_pem(pem),
                Algorithm::ES256 => DecodingKey::from_ec_pem(pem),
                _ => DecodingKey::from_ed_pem(pem),
            },
        }
    }
}

/// A secret string whose `Debug` never prints it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(\"[redacted]\")")
    }
}

/// Development conveniences of the GraphQL endpoint: on in development, off in production
/// unless enabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conveniences {
    /// Schema introspection (`__schema`, `__type`): what GraphiQL and codegen tools read.
    pub introspection: bool,
    /// "Did you mean …" in validation errors, which tell a stranger the schema's names.
    pub suggestions: bool,
    /// The GraphiQL page on `GET /graphql`.
    pub graphiql: bool,
}

#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body accepted, on every route.
    pub max_body_bytes: usize,
    /// Largest serialized size of one setting value.
    pub max_value_bytes: usize,
    /// Deepest nesting of arrays and objects in one setting value.
    pub max_value_depth: usize,
    /// Most keys one write may change (a patch's members).
    pub max_keys_per_write: usize,
    /// Most keys one user may keep in one scope; 0 is no quota.
    pub quota_keys_per_scope: u64,
    /// Most bytes of values (their JSON text) one user may keep in one scope; 0 is no quota.
    pub quota_bytes_per_scope: u64,
    /// About how much memory the settings cache may hold, in MiB; 0 turns it off.
    pub settings_cache_mb: u64,
    pub graphql_max_depth: usize,
    pub graphql_max_complexity: usize,
    /// Most operations in one batched GraphQL request.
    pub graphql_max_batch: usize,
    /// Most Apollo persisted queries kept; the least recently used go first.
    pub graphql_persisted_queries: usize,
    /// How long a WebSocket may stay open before its `connection_init` (then 4408).
    pub graphql_ws_init_timeout: Duration,
    /// Most lexical tokens in one GraphQL document.
    pub graphql_max_tokens: usize,
    /// Most fields one document selects once its fragments are expanded.
    pub graphql_max_selections: u64,
    /// Most directives one document applies once its fragments are expanded.
    pub graphql_max_directives: u64,
    /// Longest a query may run before it is stopped (mutations finish what they started).
    pub graphql_execution_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1024 * 1024,
            max_value_bytes: 64 * 1024,
            max_value_depth: 32,
            max_keys_per_write: 1000,
            quota_keys_per_scope: 10_000,
            quota_bytes_per_scope: 10 * 1024 * 1024,
            settings_cache_mb: 32,
            graphql_max_depth: 16,
            graphql_max_complexity: 500,
            graphql_max_batch: 10,
            graphql_persisted_queries: 1000,
            graphql_ws_init_timeout: Duration::from_secs(10),
            graphql_max_tokens: 15_000,
            graphql_max_selections: 2_000,
            graphql_max_directives: 50,
            graphql_execution_timeout: Duration::from_secs(10),
        }
    }
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite://settings-api.db?mode=rwc";
pub const DEFAULT_BIND_ADDR: &str = "127.0.0.1:8080";

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// Reads configuration through `lookup`, so that tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let defaults = Limits::default();
        let limits = Limits {
            max_body_bytes: parse_or(&lookup, "MAX_BODY_BYTES", defaults.max_body_bytes)?,
            max_value_bytes: parse_or(&lookup, "MAX_VALUE_BYTES", defaults.max_value_bytes)?,
            max_value_depth: parse_or(&lookup, "MAX_VALUE_DEPTH", defaults.max_value_depth)?,
            max_keys_per_write: parse_or(
                &lookup,
                "MAX_KEYS_PER_WRITE",
                defaults.max_keys_per_write,
            )?
            .max(1),
            quota_keys_per_scope: parse_or(
                &lookup,
                "QUOTA_KEYS_PER_SCOPE",
                defaults.quota_keys_per_scope,
            )?,
            quota_bytes_per_scope: parse_or(
                &lookup,
                "QUOTA_BYTES_PER_SCOPE",
                defaults.quota_bytes_per_scope,
            )?,
            settings_cache_mb: parse_or(&lookup, "SETTINGS_CACHE_MB", defaults.settings_cache_mb)?,
            graphql_max_depth: parse_or(&lookup, "GRAPHQL_MAX_DEPTH", defaults.graphql_max_depth)?,
            graphql_max_complexity: parse_or(
                &lookup,
                "GRAPHQL_MAX_COMPLEXITY",
                defaults.graphql_max_complexity,
            )?,
            graphql_max_batch: parse_or(&lookup, "GRAPHQL_MAX_BATCH", defaults.graphql_max_batch)?,
            graphql_persisted_queries: parse_or(
                &lookup,
                "GRAPHQL_PERSISTED_QUERIES",
                defaults.graphql_persisted_queries,
            )?
            .max(1),
            graphql_ws_init_timeout: Duration::from_millis(parse_or(
                &lookup,
                "GRAPHQL_WS_INIT_TIMEOUT_MS",
                defaults.graphql_ws_init_timeout.as_millis() as u64,
            )?),
            graphql_max_tokens: parse_or(
                &lookup,
                "GRAPHQL_MAX_TOKENS",
                defaults.graphql_max_tokens,
            )?,
            graphql_max_selections: parse_or(
                &lookup,
                "GRAPHQL_MAX_SELECTIONS",
                defaults.graphql_max_selections,
            )?,
            graphql_max_directives: parse_or(
                &lookup,
                "GRAPHQL_MAX_DIRECTIVES",
                defaults.graphql_max_directives,
            )?,
            graphql_execution_timeout: Duration::from_millis(
                parse_or(
                    &lookup,
                    "GRAPHQL_EXECUTION_TIMEOUT_MS",
                    defaults.graphql_execution_timeout.as_millis() as u64,
                )?
                .max(1),
            ),
        };

        let app_env = match lookup("APP_ENV").as_deref() {
            None | Some("development") | Some("dev") => AppEnv::Development,
            Some("production") | Some("prod") => AppEnv::Production,
            Some(other) => bail!("APP_ENV must be `development` or `production`, not `{other}`"),
        };
        let log_format = match lookup("LOG_FORMAT").as_deref() {
            None | Some("pretty") | Some("text") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => bail!("LOG_FORMAT must be `pretty` or `json`, not `{other}`"),
        };

        let development = app_env == AppEnv::Development;
        let conveniences = Conveniences {
            introspection: parse_bool_or(&lookup, "GRAPHQL_INTROSPECTION", development)?,
            suggestions: parse_bool_or(&lookup, "GRAPHQL_SUGGESTIONS", development)?,
            graphiql: parse_bool_or(&lookup, "GRAPHIQL", development)?,
        };

        let jwt = JwtConfig {
            key: jwt_key(&lookup)?,
            issuer: lookup("JWT_ISSUER"),
            audience: lookup("JWT_AUDIENCE"),
            leeway: Duration::from_secs(parse_or(&lookup, "JWT_LEEWAY_SECS", 30)?),
        };
        if app_env == AppEnv::Production && jwt.key.is_none() {
            bail!(
                "APP_ENV=production requires a verification key: set JWT_SECRET, \
                 or JWT_PUBLIC_KEY_FILE with JWT_ALGORITHM"
            );
        }

        Ok(Config {
            database_url: lookup("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.into()),
            database_max_connections: parse_or(&lookup, "DATABASE_MAX_CONNECTIONS", 16)?,
            bind_addr: parse_or(&lookup, "BIND_ADDR", DEFAULT_BIND_ADDR.parse()?)?,
            app_env,
            log_format,
            jwt,
            limits,
            conveniences,
            catalog: CatalogConfig {
                file: lookup("SETTINGS_CATALOG").map(PathBuf::from),
                strict: parse_bool(&lookup, "SETTINGS_STRICT")?,
            },
            history: HistoryConfig {
                keep_versions: parse_or(&lookup, "HISTORY_KEEP_VERSIONS", 100)?,
                keep_days: parse_or(&lookup, "HISTORY_KEEP_DAYS", 365)?,
                prune_interval: Duration::from_secs(
                    parse_or(&lookup, "HISTORY_PRUNE_INTERVAL_SECS", 600u64)?.max(1),
                ),
                expiry_purge_interval: Duration::from_millis(
                    parse_or(&lookup, "EXPIRY_PURGE_INTERVAL_MS", 1000u64)?.max(10),
                ),
            },
            cors: match lookup("CORS_ALLOWED_ORIGINS") {
                Some(text) => CorsOrigins::parse(&text)?,
                None if app_env == AppEnv::Production => CorsOrigins::None,
                None => CorsOrigins::Any,
            },
            metrics_token: lookup("METRICS_TOKEN").map(Secret::new),
            rate_limit: RateLimit {
                per_minute: parse_or(&lookup, "RATE_LIMIT_PER_MINUTE", 3000)?,
                burst: parse_or(&lookup, "RATE_LIMIT_BURST", 100u32)?.max(1),
                per_ip_per_minute: parse_or(&lookup, "RATE_LIMIT_PER_IP_PER_MINUTE", 30_000)?,
                per_ip_burst: parse_or(&lookup, "RATE_LIMIT_PER_IP_BURST", 1_000u32)?.max(1),
            },
            rest_scopes: lookup("REST_SCOPES")
                .map(|text| RestScopes::parse(&text))
                .transpose()?
                .unwrap_or_default(),
            shutdown_timeout: Duration::from_secs(parse_or(&lookup, "SHUTDOWN_TIMEOUT_SECS", 30)?),
            connections: ConnectionLimits {
                max_connections: parse_or(&lookup, "MAX_CONNECTIONS", 10_000usize)?.max(1),
                header_timeout: Duration::from_secs(
                    parse_or(&lookup, "HTTP_HEADER_TIMEOUT_SECS", 10u64)?.max(1),
                ),
                body_timeout: Duration::from_secs(
                    parse_or(&lookup, "HTTP_BODY_TIMEOUT_SECS", 30u64)?.max(1),
                ),
            },
        })
    }
}

fn jwt_key(lookup: &impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<JwtKey>> {
    let algorithm = lookup("JWT_ALGORITHM")
        .map(|name| {
            Algorithm::from_str(&name).ok().with_context(|| {
                format!("JWT_ALGORITHM must be HS256, RS256, ES256 or EdDSA, not `{name}`")
            })
        })
        .transpose()?;
    match (lookup("JWT_SECRET"), lookup("JWT_PUBLIC_KEY_FILE")) {
        (Some(_), Some(_)) => {
            bail!("set either JWT_SECRET or JWT_PUBLIC_KEY_FILE, not both: exactly one key is used")
        }
        (Some(secret), None) => {
            if !matches!(algorithm, None | Some(Algorithm::HS256)) {
                bail!("JWT_SECRET is an HS256 key; JWT_ALGORITHM must be HS256 or unset");
            }
            if secret.len() < 32 {
                bail!("JWT_SECRET must be at least 32 bytes long");
            }
            Ok(Some(JwtKey::Secret(Secret::new(secret))))
        }
        (None, Some(path)) => {
            let algorithm = match algorithm {
                Some(a @ (Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA)) => a,
                _ => bail!("JWT_PUBLIC_KEY_FILE needs JWT_ALGORITHM set to RS256, ES256 or EdDSA"),
            };
            let path = PathBuf::from(path);
            let pem = std::fs::read(&path)
                .with_context(|| format!("cannot read JWT_PUBLIC_KEY_FILE {}", path.display()))?;
            let key = JwtKey::PublicKey { algorithm, pem };
            // Parse now so that a bad key stops start-up rather than failing every request.
            key.decoding_key().with_context(|| {
                format!(
                    "JWT_PUBLIC_KEY_FILE {} is not a {algorithm:?} public key",
                    path.display()
                )
            })?;
            Ok(Some(key))
        }
        (None, None) => Ok(None),
    }
}

fn parse_bool(lookup: &impl Fn(&str) -> Option<String>, name: &str) -> anyhow::Result<bool> {
    parse_bool_or(lookup, name, false)
}

fn parse_bool_or(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: bool,
) -> anyhow::Result<bool> {
    match lookup(name).as_deref().map(str::trim) {
        None => Ok(default),
        Some("false") | Some("0") | Some("no") => Ok(false),
        Some("true") | Some("1") | Some("yes") => Ok(true),
        Some(other) => bail!("{name} must be `true` or `false`, not `{other}`"),
    }
}

fn parse_or<T>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: T,
) -> anyhow::Result<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    match lookup(name) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}=`{raw}` is not valid: {e}")),
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redact_url(&self.database_url))
            .field("database_max_connections", &self.database_max_connections)
            .field("bind_addr", &self.bind_addr)
            .field("app_env", &self.app_env)
            .field("log_format", &self.log_format)
            .field(
                "jwt_algorithm",
                &self.jwt.key.as_ref().map(JwtKey::algorithm),
            )
            .field("jwt_issuer", &self.jwt.issuer)
            .field("jwt_audience", &self.jwt.audience)
            .field("limits", &self.limits)
            .field("conveniences", &self.conveniences)
            .field("catalog", &self.catalog)
            .field("history", &self.history)
            .field("rest_scopes", &self.rest_scopes)
            .field("cors", &self.cors)
            .field("rate_limit", &self.rate_limit)
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

/// Hides the password of a database URL such as `postgres://user:password@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:[redacted]@{host}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> anyhow::Result<Config> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_need_no_variables() {
        let config = config(&[]).unwrap();
        assert_eq!(config.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(config.bind_addr.to_string(), DEFAULT_BIND_ADDR);
        assert_eq!(config.limits.max_body_bytes, 1024 * 1024);
        assert!(config.jwt.key.is_none());
    }

    #[test]
    fn production_refuses_to_start_without_a_key() {
        let err = config(&[("APP_ENV", "production")]).unwrap_err();
        assert!(err.to_string().contains("JWT_SECRET"), "{err}");
    }

    #[test]
    fn a_secret_and_a_public_key_together_are_refused() {
        let err = config(&[
            ("JWT_SECRET", &"s".repeat(32)),
            ("JWT_PUBLIC_KEY_FILE", "k.pem"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
    }

    #[test]
    fn a_public_key_needs_an_asymmetric_algorithm() {
        let err =
            config(&[("JWT_PUBLIC_KEY_FILE", "k.pem"), ("JWT_ALGORITHM", "HS256")]).unwrap_err();
        assert!(err.to_string().contains("RS256, ES256 or EdDSA"), "{err}");
    }

    #[test]
    fn the_rate_limit_is_on_by_default_and_generous() {
        let rate = config(&[]).unwrap().rate_limit;
        assert_eq!((rate.per_minute, rate.burst), (3000, 100));
        assert_eq!((rate.per_ip_per_minute, rate.per_ip_burst), (30_000, 1_000));
        let off = config(&[("RATE_LIMIT_PER_MINUTE", "0")])
            .unwrap()
            .rate_limit;
        assert_eq!(off.per_minute, 0);
    }

    #[test]
    fn a_bad_limit_names_the_variable() {
        let err = config(&[("MAX_BODY_BYTES", "lots")]).unwrap_err();
        assert!(err.to_string().contains("MAX_BODY_BYTES"), "{err}");
    }

    #[test]
    fn rest_scopes_bind_the_contracts_it_names_and_keep_the_others() {
        assert_eq!(config(&[]).unwrap().rest_scopes, RestScopes::default());
        let scopes = config(&[("REST_SCOPES", r#"{"003": "", "001": "legacy"}"#)])
            .unwrap()
            .rest_scopes;
        assert_eq!((scopes.c003.as_str(), scopes.c001.as_str()), ("", "legacy"));
        assert_eq!(scopes.c004, RestScopes::default().c004);
        for bad in [r#"{"005": "x"}"#, r#"{"003": 1}"#, "[]"] {
            let err = config(&[("REST_SCOPES", bad)]).unwrap_err();
            assert!(err.to_string().contains("REST_SCOPES"), "{bad}: {err}");
        }
    }

    #[test]
    fn cors_origins_default_by_environment_and_take_exact_origins() {
        assert_eq!(config(&[]).unwrap().cors, CorsOrigins::Any);
        let production = [("APP_ENV", "production"), ("JWT_SECRET", &"s".repeat(32))];
        assert_eq!(config(&production).unwrap().cors, CorsOrigins::None);
        let listed = config(&[(
            "CORS_ALLOWED_ORIGINS",
            "https://app.example.com, http://localhost:3000",
        )])
        .unwrap();
        assert_eq!(
            listed.cors,
            CorsOrigins::Exactly(vec![
                "https://app.example.com".into(),
                "http://localhost:3000".into()
            ])
        );
        for bad in [
            "app.example.com",
            "https://app.example.com/path",
            "ftp://x",
            ",",
        ] {
            let err = config(&[("CORS_ALLOWED_ORIGINS", bad)]).unwrap_err();
            assert!(
                err.to_string().contains("CORS_ALLOWED_ORIGINS"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn graphql_conveniences_are_on_in_development_and_off_in_production_unless_enabled() {
        let all = Conveniences {
            introspection: true,
            suggestions: true,
            graphiql: true,
        };
        assert_eq!(config(&[]).unwrap().conveniences, all);
        let secret = "s".repeat(32);
        let production = [("APP_ENV", "production"), ("JWT_SECRET", secret.as_str())];
        let off = config(&production).unwrap().conveniences;
        assert!(!off.introspection && !off.suggestions && !off.graphiql);
        let enabled = config(&[production[0], production[1], ("GRAPHIQL", "true")])
            .unwrap()
            .conveniences;
        assert!(enabled.graphiql && !enabled.introspection);
    }

    #[test]
    fn debug_output_hides_secrets() {
        let config = config(&[
            ("JWT_SECRET", "a-very-secret-value-of-32-bytes!!"),
            ("DATABASE_URL", "postgres://app:hunter2@db/settings"),
        ])
        .unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("a-very-secret"), "{printed}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(
            printed.contains("postgres://app:[redacted]@db/settings"),
            "{printed}"
        );
    }
}
