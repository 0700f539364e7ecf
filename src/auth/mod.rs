//! Trusted clients: applications, their API keys and scopes, and per-application rate limits.
//!
//! Keys are checked against an in-memory [`registry::Registry`] refreshed from ClickHouse, so
//! the request path never waits on ClickHouse for a known key. The HTTP side (headers, CORS,
//! status codes) lives in `api::auth`; this module knows keys, applications and quotas.

pub mod admin;
pub mod keys;
pub mod limits;
pub mod registry;

use std::fmt;
use std::sync::Arc;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Send events (`POST /api/events`, the beacon path).
    Ingest,
    /// Read events, sessions, errors and schemas.
    Read,
    /// Administrative operations such as reloading schemas.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Ingest, Scope::Read, Scope::Admin];

    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.as_str() == text.trim())
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The authenticated caller of a request.
///
/// A key belongs to one application, or to the whole organisation (README, Tenancy and
/// security): an application's key reads and administers only that application; an
/// organisation key reads every application and administers everything, and never sends
/// events, since a row must name the application it came from.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The application the key belongs to, stamped on every row the request produces; empty
    /// for an organisation key (which has no `ingest` scope).
    pub application: Arc<str>,
    /// The key's public prefix: safe to log.
    pub key_prefix: Arc<str>,
    /// Shared: a principal is cloned from the registry for every request.
    pub scopes: Arc<[Scope]>,
    /// Browser origins allowed for the application.
    pub allowed_origins: Arc<[String]>,
    /// Events per second and burst in force for the application.
    pub rate_per_second: u32,
    pub burst: u32,
    /// The application's retention in days (0: the configured defaults; always 0 for an
    /// organisation key, which sends no events).
    pub retention_days: u16,
    /// The application's personal-data settings (issue 30; defaults for an organisation key).
    pub privacy: crate::privacy::AppSettings,
}

impl Principal {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// Whether the key belongs to the organisation rather than one application.
    pub fn is_organisation(&self) -> bool {
        self.application.is_empty()
    }

    /// The one application this key may read and administer; `None` for an organisation key,
    /// which may act on every application.
    pub fn application_scope(&self) -> Option<&str> {
        (!self.is_organisation()).then_some(&*self.application)
    }

    /// The tenancy rule, the one place it is decided (README, Tenancy and security): the
    /// application a request of this key acts on, given the one it `asked` for.
    ///
    /// - An application's key acts on its own application only: asking for none means its
    ///   own (`Ok(Some(own))`), asking for its own is granted, asking for another is refused
    ///   with [`NotInScope`] (the API answers 403 `application_not_in_scope`, or 404 where an
    ///   id must not be probed).
    /// - An organisation key acts on what it asked for: one application, or every one
    ///   (`Ok(None)`).
    ///
    /// Every tenancy check of the API goes through here (reads, sessions, the plan, the live
    /// stream, the ledger, replays, erasures); [`Principal::may_act_on`] is its yes-or-no form.
    pub fn confine(&self, asked: Option<String>) -> Result<Option<String>, NotInScope> {
        let Some(own) = self.application_scope() else {
            return Ok(asked);
        };
        match asked {
            Some(asked) if asked != own => Err(NotInScope {
                own: own.to_owned(),
                asked,
            }),
            _ => Ok(Some(own.to_owned())),
        }
    }

    /// Whether the key may read or administer `application`: [`Principal::confine`] as a
    /// yes or no, without allocating.
    pub fn may_act_on(&self, application: &str) -> bool {
        self.application_scope()
            .is_none_or(|own| own == application)
    }

    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|allowed| allowed == origin)
    }
}

/// An application's key asked for another application ([`Principal::confine`]). The text is
/// the answer's message on the read paths; an edge that does something other than reading
/// words its own from `own`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this key reads only the application `{own}`; an organisation key reads every application")]
pub struct NotInScope {
    /// The key's own application.
    pub own: String,
    /// The application the request named.
    pub asked: String,
}

/// Why a key was refused. The variants are told apart in logs and metrics; the client gets
/// one generic 401 for all of them, so that probing cannot tell a revoked key from a typo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no API key")]
    Missing,
    #[error("malformed API key")]
    Malformed,
    #[error("unknown API key")]
    Unknown,
    #[error("revoked API key")]
    Revoked,
    #[error("application disabled")]
    Disabled,
    #[error("key registry unavailable")]
    Unavailable,
}

impl AuthError {
    /// Bounded label value for metrics.
    pub const fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::Unknown => "unknown",
            AuthError::Revoked => "revoked",
            AuthError::Disabled => "disabled",
            AuthError::Unavailable => "unavailable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_keys_read_only_their_application() {
        let key = |application: &str| Principal {
            application: application.into(),
            key_prefix: "eye_test".into(),
            scopes: vec![Scope::Read].into(),
            allowed_origins: Vec::new().into(),
            rate_per_second: 0,
            burst: 0,
            retention_days: 0,
            privacy: crate::privacy::AppSettings::default(),
        };
        assert_eq!(key("a").confine(None).unwrap().as_deref(), Some("a"));
        assert!(key("a").confine(Some("b".into())).is_err());
        assert_eq!(
            key("").confine(Some("b".into())).unwrap().as_deref(),
            Some("b")
        );
        assert_eq!(key("").confine(None).unwrap(), None);
    }
}
