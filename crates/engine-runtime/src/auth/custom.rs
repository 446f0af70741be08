//! Custom authentication: the connector's `PROVISION AUTH VALIDATION`, `ON REFRESH` and
//! `ON PROVISION` resources obtain and refresh the token.

use engine_spec::Resource;

use crate::Inputs;
use crate::engine::Run;
use crate::observer::RefreshReason;
use crate::run_error::RunError;

/// The resource that handles `reason`: provisioning for a new instance, else `ON REFRESH`, else
/// provisioning again.
pub(crate) fn step<'a>(
    provision: &'a Resource,
    refresh: Option<&'a Resource>,
    reason: &RefreshReason,
) -> &'a Resource {
    match (reason, refresh) {
        (RefreshReason::NotProvisioned, _) | (_, None) => provision,
        (_, Some(refresh)) => refresh,
    }
}

/// Runs the step for `reason`; after a first provisioning, `ON PROVISION` runs too, with the new
/// token.
pub(crate) async fn obtain(
    run: &mut Run<'_>,
    provision: &Resource,
    refresh: Option<&Resource>,
    on_provision: Option<&Resource>,
    reason: &RefreshReason,
) -> Result<(), RunError> {
    let resource = step(provision, refresh, reason);
    let (_, extracted) = run.execute_lifecycle(resource, &Inputs::default()).await?;
    run.save(&extracted.saved);
    if matches!(reason, RefreshReason::NotProvisioned)
        && let Some(on_provision) = on_provision
    {
        let (_, extracted) = run
            .execute_lifecycle(on_provision, &Inputs::default())
            .await?;
        run.save(&extracted.saved);
    }
    Ok(())
}
