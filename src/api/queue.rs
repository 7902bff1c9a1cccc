//! `/v2/queue`: apps waiting for launches, why they wait (Marathon's
//! processedOffersSummary, plus which constraint turned agents down), and
//! `DELETE /v2/queue/{appId}/delay` to forget an app's launch backoff.

use super::dto::app::{app_json, Embed};
use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::domain::PathId;
use crate::master::QueueInfo;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// Marathon's rejection reasons in the order its offer matcher checks them: an agent
/// that reaches a check was "processed" by it; the summary lists every reason.
const REASONS: &[&str] = &[
    "UnfulfilledRole",
    "UnfulfilledConstraint",
    "NoCorrespondingReservationFound",
    "AgentMaintenance",
    "InsufficientCpus",
    "InsufficientMemory",
    "InsufficientDisk",
    "InsufficientGpus",
    "InsufficientPorts",
    "DeclinedScarceResources",
];

/// Marathon's `processedOffersSummary` from the last placement pass's rejections.
/// Reasons dromos reports that Marathon did not know (RoleQuotaExceeded,
/// NoCorrespondingContainerizer) are listed after Marathon's.
fn offers_summary(q: &QueueInfo) -> Value {
    let declined_total: u32 = q.rejections.values().sum();
    let mut processed = declined_total;
    let mut summary = Vec::new();
    let extra = q.rejections.keys().filter(|r| !REASONS.contains(r));
    for reason in REASONS.iter().copied().chain(extra.copied()) {
        let declined = q.rejections.get(reason).copied().unwrap_or(0);
        summary.push(json!({"reason": reason, "declined": declined, "processed": processed}));
        processed -= declined;
    }
    json!({
        "processedOffersCount": declined_total,
        "unusedOffersCount": declined_total,
        "rejectSummaryLastOffers": summary,
        "rejectSummaryLaunchAttempt": summary,
    })
}

pub async fn list(State(st): State<AppState>) -> Json<Value> {
    let now = crate::master::now();
    let queue = st.master.queue();
    let state = st.master.read().await;
    let items: Vec<Value> = queue
        .iter()
        .filter_map(|(id, q)| {
            let rec = state.apps.get(id)?;
            let left = q.delayed_until.map(|until| now.seconds_until(until).max(0.0).ceil() as u64).unwrap_or(0);
            Some(json!({
                "app": app_json(rec, &state, Embed::default()),
                "count": q.count,
                "role": rec.current.spec.role(),
                "delay": {"timeLeftSeconds": left, "overdue": left == 0},
                "since": q.since.unwrap_or(now),
                "processedOffersSummary": offers_summary(q),
                "unfulfilledConstraints": q.constraints.iter()
                    .map(|(c, n)| json!({"constraint": c, "declined": n}))
                    .collect::<Vec<_>>(),
                "lastUnusedOffers": [],
            }))
        })
        .collect();
    Json(json!({ "queue": items }))
}

/// `DELETE /v2/queue/{appId}/delay`: 204, or 404 when the app does not wait.
pub async fn delete_delay(State(st): State<AppState>, Path(rest): Path<String>) -> ApiResult<Response> {
    let Some(app) = rest.strip_suffix("/delay") else {
        return Err(ApiError::NotFound(format!("No route for DELETE /v2/queue/{rest}")));
    };
    let id = PathId::parse_app(app).map_err(|e| ApiError::NotFound(format!("App '{app}' does not exist: {e}")))?;
    if !st.master.queue().contains_key(&id) {
        return Err(ApiError::NotFound(format!("Application {id} not found in tasks queue.")));
    }
    st.master.reset_backoff(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}
