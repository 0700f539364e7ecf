//! Administration over HTTP: payload schemas (listing them with `read`, reloading them with
//! `admin`), applications and their keys (`admin`).
//!
//! Tenancy (README, Tenancy and security): what affects every application — reloading the
//! schema set, registering an application, an application's rate and burst — needs an
//! organisation key (403
//! `organisation_key_required` otherwise). An application's admin key manages only its own
//! application and keys; another application's id or key prefix answers 404, as if it did
//! not exist, so that ids cannot be probed.
//!
//! One file per resource: `schemas` (the payload schema set), `applications`, `keys`. This
//! file holds what they share: the JSON body and path decoding, the tenancy checks and the
//! 404 that does not quote a long path. Error mappings live in `api/error.rs`.

mod applications;
mod keys;
mod schemas;

pub use applications::*;
pub use keys::*;
pub use schemas::*;

use axum::extract::rejection::PathRejection;
use axum::extract::Path;

use crate::api::params::invalid_path;
use crate::api::{codes, ApiError, AppState};
use crate::auth::Principal;

/// Refuses an application's key for an operation that affects every application.
fn require_organisation(principal: &Principal, what: &str) -> Result<(), ApiError> {
    if principal.is_organisation() {
        return Ok(());
    }
    Err(ApiError::organisation_key_required(format!(
        "{what} affects every application and needs an organisation admin key; this key \
         administers only the application `{}`",
        principal.application
    )))
}

/// The longest `invalid_body` message: it quotes the client's input.
const MAX_BODY_MESSAGE_CHARS: usize = 300;

/// A JSON body, or a 400 `invalid_body` that says what is wrong with it.
pub(super) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| {
        let mut message: String = format!("the body is not the expected JSON object: {error}")
            .chars()
            .take(MAX_BODY_MESSAGE_CHARS)
            .collect();
        if message.chars().count() == MAX_BODY_MESSAGE_CHARS {
            message.push('…');
        }
        ApiError::bad_request(codes::INVALID_BODY, message)
    })
}

fn path_text(field: &str, path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    match path {
        Ok(Path(text)) => Ok(text),
        Err(rejection) => Err(invalid_path(field, rejection.body_text())),
    }
}

/// Checks that `principal` administers the application `id` and that it exists: 404
/// otherwise, the same answer for both.
async fn administered(state: &AppState, principal: &Principal, id: &str) -> Result<(), ApiError> {
    let exists = principal.may_act_on(id) && state.store.application(id).await?.is_some();
    match exists {
        true => Ok(()),
        false => Err(not_found("application", id, MAX_APPLICATION_ID_CHARS)),
    }
}

/// Application ids are at most this long (`auth::admin::application_id`).
const MAX_APPLICATION_ID_CHARS: usize = 64;
/// Key prefixes are `eye_` and eight characters.
const KEY_PREFIX_CHARS: usize = 12;

/// A 404 naming what was asked for when it could be a real name, and not quoting anything
/// longer (the path is the client's).
fn not_found(what: &str, asked: &str, longest: usize) -> ApiError {
    if asked.chars().count() > longest {
        ApiError::NotFound(format!("no such {what}"))
    } else {
        ApiError::NotFound(format!("no {what} `{asked}`"))
    }
}

/// Makes this instance see an administrative change at once (the others within
/// `auth.refresh_interval_ms`).
async fn refresh_registry(state: &AppState) {
    if let Err(error) = state.registry.refresh().await {
        tracing::warn!(%error, "could not refresh applications and keys after a change");
    }
}
