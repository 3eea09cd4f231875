//! API errors as Kubernetes' `metav1.Status`: the HTTP code, the reason
//! kubectl prints (`Error from server (NotFound): ...`) and a message in
//! the API server's words.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_scheduler::{Kind, ManifestError, StoreError};

/// An API request refused or failed, sent as a `Status` object.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub code: StatusCode,
    /// Kubernetes' `reason` (`NotFound`, `AlreadyExists`, `Invalid`...).
    pub reason: &'static str,
    /// The message kubectl prints.
    pub message: String,
    /// The field at fault, for `Invalid`.
    pub field: Option<String>,
}

impl ApiError {
    /// An error of `code` and `reason`.
    pub fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            field: None,
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// 404 for a path that names no resource.
    pub fn no_resource() -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 404 for a missing object, in the API server's words.
    pub fn not_found(kind: Kind, name: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{} {name:?} not found", qualified(kind)),
        )
    }

    /// 500 for a failure of the daemon itself.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// The `Status` object.
    pub fn to_json(&self) -> serde_json::Value {
        let mut status = serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(field) = &self.field {
            status["details"] = serde_json::json!({
                "causes": [{"reason": "FieldValueInvalid", "message": self.message, "field": field}]
            });
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.code, &self.to_json())
    }
}

/// A JSON response.
pub fn json_response(code: StatusCode, value: &serde_json::Value) -> Response {
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// The resource name with its group, as the API server names it in
/// messages (`deployments.apps`, `pods`).
pub fn qualified(kind: Kind) -> String {
    match kind {
        Kind::Deployment | Kind::ReplicaSet => format!("{}.apps", kind.plural()),
        Kind::Namespace | Kind::Pod => kind.plural().to_owned(),
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::AlreadyExists { reference } => ApiError::new(
                StatusCode::CONFLICT,
                "AlreadyExists",
                reference_message(&reference, "already exists"),
            ),
            StoreError::NotFound { kind, name, .. } => ApiError::not_found(kind, &name),
            StoreError::NamespaceNotFound(namespace) => {
                ApiError::not_found(Kind::Namespace, &namespace)
            }
            error @ StoreError::Conflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, "Conflict", error.to_string())
            }
            StoreError::Immutable { reference, field } => ApiError {
                code: StatusCode::UNPROCESSABLE_ENTITY,
                reason: "Invalid",
                message: format!("{reference}: {field}: Invalid value: field is immutable"),
                field: Some(field.to_owned()),
            },
            StoreError::Database(message) => ApiError::internal(message),
        }
    }
}

/// `deployments.apps "web" already exists` from `deployment.apps/web`.
fn reference_message(reference: &str, what: &str) -> String {
    let (kind, name) = reference.split_once('/').unwrap_or((reference, ""));
    let (singular, group) = kind.split_once('.').unwrap_or((kind, ""));
    let resource = Kind::from_resource_name(singular)
        .map(qualified)
        .unwrap_or_else(|| format!("{singular}s{}", if group.is_empty() { "" } else { "." }));
    format!("{resource} {name:?} {what}")
}

impl From<ManifestError> for ApiError {
    fn from(error: ManifestError) -> ApiError {
        match &error {
            ManifestError::Invalid {
                error: field_error, ..
            } => ApiError {
                code: StatusCode::UNPROCESSABLE_ENTITY,
                reason: "Invalid",
                message: error.to_string(),
                field: (!field_error.field.is_empty()).then(|| field_error.field.clone()),
            },
            ManifestError::UnsupportedKind { .. } => ApiError::bad_request(error.to_string()),
            _ => ApiError::bad_request(error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_read_as_the_api_servers() {
        let error = ApiError::from(StoreError::AlreadyExists {
            reference: "deployment.apps/web".to_owned(),
        });
        assert_eq!(error.code, StatusCode::CONFLICT);
        assert_eq!(error.message, "deployments.apps \"web\" already exists");
        let status = ApiError::not_found(Kind::Pod, "p").to_json();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(status["code"], 404);
        assert_eq!(status["message"], "pods \"p\" not found");
    }
}
