//! `GET /api/v1/openapi.json`: the API's OpenAPI 3.1 document. Written by
//! hand in YAML (`openapi.yaml`, easier to read and review than JSON) and
//! compiled into the binary; converted to JSON once, on first request.

use super::ApiError;
use axum::Json;
use std::sync::OnceLock;

/// The document's source, as shipped.
const OPENAPI_YAML: &str = include_str!("openapi.yaml");

/// The document as JSON, or why it does not parse (a build with a broken
/// file: `tests/openapi.rs` fails on it before that can ship).
fn document_json() -> Result<&'static serde_json::Value, &'static str> {
    static DOC: OnceLock<Result<serde_json::Value, String>> = OnceLock::new();
    DOC.get_or_init(|| {
        serde_yaml_ng::from_str::<serde_json::Value>(OPENAPI_YAML).map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(String::as_str)
}

/// Public like `/healthz`: it describes the API, it holds no data.
pub(super) async fn document() -> Result<Json<serde_json::Value>, ApiError> {
    document_json()
        .map(|d| Json(d.clone()))
        .map_err(|e| ApiError::Internal(format!("the OpenAPI document does not parse: {e}")))
}
