//! Obtaining and refreshing tokens, one file per scheme: [`custom`] runs the connector's own
//! lifecycle resources, [`oauth2`] is the built-in OAuth2 client.

pub(crate) mod authorize;
pub(crate) mod custom;
pub mod oauth2;

use engine_spec::Connector;
use engine_spec::kinds::Grant;

use crate::engine::Run;
use crate::lifecycle::Lifecycle;
use crate::observer::RefreshReason;
use crate::request::text_of;
use crate::run_error::RunError;

/// What obtains the token for `reason`, for messages: `ON REFRESH`, `oauth2 refresh_token` ...
pub(crate) fn step_name(
    connector: &Connector,
    lifecycle: Lifecycle<'_>,
    reason: &RefreshReason,
) -> String {
    match lifecycle {
        Lifecycle::None => "nothing".into(),
        Lifecycle::Custom {
            provision, refresh, ..
        } => custom::step(provision, refresh, reason)
            .kind()
            .label()
            .to_owned(),
        Lifecycle::Oauth2 => {
            let _ = connector;
            "oauth2".into()
        }
    }
}

/// Obtains or refreshes the token; the values to save go into the run's pending state.
pub(crate) async fn obtain(
    run: &mut Run<'_>,
    lifecycle: Lifecycle<'_>,
    reason: &RefreshReason,
) -> Result<(), RunError> {
    match lifecycle {
        Lifecycle::None => Ok(()),
        Lifecycle::Custom {
            provision,
            refresh,
            on_provision,
        } => custom::obtain(run, provision, refresh, on_provision, reason).await,
        Lifecycle::Oauth2 => oauth2::obtain(run).await,
    }
}

/// Adds the requests [`obtain`] would send to a dry run's plan.
pub(crate) fn plan(run: &mut Run<'_>, lifecycle: Lifecycle<'_>) -> Result<(), RunError> {
    match lifecycle {
        Lifecycle::None => Ok(()),
        Lifecycle::Custom {
            provision,
            refresh,
            on_provision,
        } => {
            let reason = if lifecycle.marker(run.configuration()).is_none() {
                RefreshReason::NotProvisioned
            } else {
                RefreshReason::SessionAlways
            };
            run.plan(
                custom::step(provision, refresh, &reason),
                &crate::Inputs::default(),
                None,
            )?;
            match (reason, on_provision) {
                (RefreshReason::NotProvisioned, Some(on_provision)) => {
                    run.plan(on_provision, &crate::Inputs::default(), None)
                }
                _ => Ok(()),
            }
        }
        Lifecycle::Oauth2 => {
            let request = oauth2::next_token_request(run)?;
            run.plan_request(request);
            Ok(())
        }
    }
}

/// The OAuth2 grant that will run next: `refresh_token` when one is held, else the
/// connector's grant.
pub(crate) fn next_grant(run: &Run<'_>) -> Option<Grant> {
    let held = run
        .configuration()
        .get("oauth.user.refresh_token")
        .and_then(text_of)
        .is_some();
    (!held).then(|| run.connector.authentication().grant())
}
