//! Walking the ladder: the first rung that fits under auto, or the mode
//! asked for and what falls back for it. Pure.

use super::{Decision, Fallback, Mode, PASTA_UPGRADE, Rejected, Request, Rung, SelectError, buggy_pasta, rungs};
use crate::host::probe::HostCaps;

pub(super) fn auto(req: &Request, caps: &HostCaps, ladder: Vec<Rung>) -> Result<Decision, SelectError> {
    let fixes = rungs::fixes_of(&ladder);
    let all: Vec<&Rung> = ladder.iter().collect();
    let Some(mut pick) = ladder.iter().position(Rung::fits) else {
        let usable = ladder.iter().position(Rung::usable);
        return match (req.fallback, usable) {
            (_, None) => Err(SelectError::NothingUsable { reason: rungs::summary(&all).join("; "), fixes }),
            (Fallback::Strict, Some(_)) => {
                Err(SelectError::NoFit { best: ladder[0].mode.clone(), reason: rungs::summary(&all).join("; "), fixes })
            }
            (fallback, Some(i)) => {
                let chosen = &ladder[i];
                let shortfalls = chosen.shortfalls.join("; ");
                let passed: String = rungs::summary(&all[..i]).iter().map(|s| format!("; {s}")).collect();
                let warning = format!("degraded network, using {}: {shortfalls}{passed}", chosen.mode);
                Ok(Decision {
                    mode: chosen.mode.clone(),
                    reason: format!("{}: no mode meets every need; {shortfalls}{passed}", chosen.mode),
                    rejected: ladder[..i].iter().map(Rung::rejected).collect(),
                    degraded: true,
                    warning: (fallback == Fallback::Warn).then_some(warning),
                    fixes,
                })
            }
        };
    };
    let mut rejected: Vec<Rejected> = ladder[..pick].iter().map(Rung::rejected).collect();
    let mut why = None;
    let mut note = String::new();
    let bugs = match &caps.pasta {
        crate::host::probe::Helper::Found { path, features } if req.needs.egress => {
            buggy_pasta(path, &features.features)
        }
        _ => None,
    };
    if let (Mode::Pasta, Some(bugs)) = (&ladder[pick].mode, bugs) {
        match ladder.iter().position(|r| r.mode == Mode::Slirp4netns) {
            Some(slirp) if ladder[slirp].fits() => {
                rejected.push(Rejected { mode: Mode::Pasta, reason: format!("egress is needed and {bugs}") });
                rejected.extend(ladder[pick + 1..slirp].iter().map(Rung::rejected));
                pick = slirp;
                why = Some(format!("preferred to pasta because egress is needed and {bugs}"));
            }
            Some(slirp) => {
                note = format!("; note: {bugs}, and slirp4netns is no alternative: {}", ladder[slirp].why_not())
            }
            None => note = format!("; note: {bugs}"),
        }
    }
    let chosen = &ladder[pick];
    let why = why.unwrap_or_else(|| match (pick, &chosen.mode) {
        (0, Mode::Bridge(_)) => "container-to-container traffic or a named network needs a bridge network".to_owned(),
        (0, Mode::Pasta) if caps.cap_net_admin => "the first choice when no bridge network is needed".to_owned(),
        (0, Mode::Pasta) => "the first choice without CAP_NET_ADMIN (rootless)".to_owned(),
        _ => format!(
            "the first usable rung of {}",
            ladder.iter().map(|r| r.mode.to_string()).collect::<Vec<_>>().join(" > ")
        ),
    });
    let skipped: Vec<&Rung> = ladder[..pick].iter().filter(|r| !r.fits()).collect();
    let passed: String = rungs::summary(&skipped).iter().map(|s| format!("; skipped {s}")).collect();
    Ok(Decision {
        mode: chosen.mode.clone(),
        reason: format!("{}: {why}{note}{passed}", chosen.mode),
        rejected,
        degraded: false,
        warning: None,
        fixes: rungs::fixes_of(&ladder[..pick]),
    })
}

pub(super) fn explicit(req: &Request, caps: &HostCaps, asked: Rung, ladder: Vec<Rung>) -> Result<Decision, SelectError> {
    let mode = asked.mode.clone();
    if asked.fits() {
        let buggy = match (&mode, &caps.pasta) {
            (Mode::Pasta, crate::host::probe::Helper::Found { path, features }) if req.needs.egress => {
                buggy_pasta(path, &features.features)
            }
            _ => None,
        };
        let Some(bugs) = buggy else {
            let reason = format!("{mode}: requested explicitly");
            return Ok(Decision { mode, reason, rejected: vec![], degraded: false, warning: None, fixes: vec![] });
        };
        // The mode runs, but egress (a need) is not to be trusted.
        let fixes = vec![PASTA_UPGRADE.to_owned(), "or choose --network slirp4netns".to_owned()];
        if req.fallback == Fallback::Strict {
            return Err(SelectError::Unavailable { mode, reason: bugs, fixes });
        }
        return Ok(Decision {
            reason: format!("{mode}: requested explicitly; note: {bugs}"),
            warning: (req.fallback == Fallback::Warn).then(|| format!("{bugs}; {PASTA_UPGRADE}")),
            mode,
            rejected: vec![],
            degraded: true,
            fixes,
        });
    }
    let fixes = rungs::fixes_of(std::slice::from_ref(&asked));
    if req.fallback == Fallback::Strict {
        return Err(SelectError::Unavailable { mode, reason: asked.why_not(), fixes });
    }
    let warn = |w: String| (req.fallback == Fallback::Warn).then_some(w);
    if asked.usable() {
        let short = asked.shortfalls.join("; ");
        return Ok(Decision {
            reason: format!("{mode}: requested explicitly, but {short}"),
            warning: warn(format!("{mode} was requested, but {short}")),
            mode,
            rejected: vec![],
            degraded: true,
            fixes,
        });
    }
    let others: Vec<&Rung> = ladder.iter().filter(|r| r.mode != mode).collect();
    let Some(pick) = others.iter().position(|r| r.fits()).or_else(|| others.iter().position(|r| r.usable())) else {
        return Err(SelectError::Unavailable { mode, reason: asked.why_not(), fixes });
    };
    let chosen = others[pick];
    let short = match chosen.shortfalls.is_empty() {
        true => String::new(),
        false => format!(" ({})", chosen.shortfalls.join("; ")),
    };
    let mut rejected = vec![asked.rejected()];
    rejected.extend(others[..pick].iter().map(|r| r.rejected()));
    Ok(Decision {
        mode: chosen.mode.clone(),
        reason: format!("{}{short}: {mode} was requested but is not usable: {}", chosen.mode, asked.why_not()),
        warning: warn(format!("{mode} is not usable, using {} instead{short}: {}", chosen.mode, asked.why_not())),
        rejected,
        degraded: true,
        fixes,
    })
}
