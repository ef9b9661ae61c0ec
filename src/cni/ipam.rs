//! Delegating addresses to an IPAM plugin (`host-local`, `static`, ...),
//! as the spec's "delegated plugins" describe: the plugin is found in
//! `CNI_PATH`, run with this call's environment (`CNI_COMMAND` as given)
//! and the whole network configuration on stdin; its result (ADD) or
//! error object comes back on stdout.

use super::result::CniResult;
use super::spec::{CniError, Code, Params};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Find `plugin` in `cni_path`.
pub fn find(plugin: &str, cni_path: &[String]) -> Result<PathBuf, CniError> {
    cni_path.iter().map(|d| PathBuf::from(d).join(plugin)).find(|p| p.is_file()).ok_or_else(|| {
        CniError::new(
            Code::InvalidNetworkConfig,
            format!("IPAM plugin {plugin:?} not found"),
            format!("looked in CNI_PATH {cni_path:?}"),
        )
    })
}

/// The `CNI_*` variables of this call an IPAM plugin gets (recorded with
/// its address, so that its `DEL` can be run by another process: a later
/// `DEL` without the record's caller, `GC`, `pelagos-net gc`).
pub fn env_of(params: &Params) -> Vec<(String, String)> {
    let args: Vec<String> = params.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    vec![
        ("CNI_CONTAINERID".into(), params.container_id.clone()),
        ("CNI_NETNS".into(), params.netns.clone().unwrap_or_default()),
        ("CNI_IFNAME".into(), params.ifname.clone()),
        ("CNI_ARGS".into(), args.join(";")),
        ("CNI_PATH".into(), params.path.join(":")),
    ]
}

/// Run the IPAM plugin for `command` (`ADD`, `DEL`, `CHECK`) with the
/// network configuration `stdin`; the parsed result for ADD.
pub fn exec(plugin: &str, command: &str, params: &Params, stdin: &[u8]) -> Result<Option<CniResult>, CniError> {
    let bin = find(plugin, &params.path)?;
    exec_bin(&bin, command, &env_of(params), stdin)
}

/// Run the IPAM plugin binary `bin` for `command` with the `CNI_*`
/// variables `env` and the configuration `stdin`.
pub fn exec_bin(
    bin: &std::path::Path,
    command: &str,
    env: &[(String, String)],
    stdin: &[u8],
) -> Result<Option<CniResult>, CniError> {
    let plugin = bin.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut child = Command::new(bin)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CniError::new(Code::IoFailure, format!("run IPAM plugin {}", bin.display()), e.to_string()))?;
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin);
    }
    let out = child.wait_with_output().map_err(|e| {
        CniError::new(Code::IoFailure, format!("wait for IPAM plugin {}", bin.display()), e.to_string())
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let msg = v.get("msg").and_then(|m| m.as_str()).unwrap_or("failed").to_owned();
        let details = v.get("details").and_then(|m| m.as_str()).map(str::to_owned);
        let details =
            details.unwrap_or_else(|| format!("{} {}", text.trim(), String::from_utf8_lossy(&out.stderr).trim()));
        // Its own code when it gave one in the spec's range, else ours.
        let code = match v.get("code").and_then(|c| c.as_u64()) {
            Some(11) => Code::TryAgainLater,
            Some(7) => Code::InvalidNetworkConfig,
            _ => Code::HostFailure,
        };
        return Err(CniError::new(code, format!("IPAM plugin {plugin} {command}: {msg}"), details));
    }
    if command != "ADD" {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        CniError::new(
            Code::DecodeFailure,
            format!("IPAM plugin {plugin} answered something that is not JSON"),
            e.to_string(),
        )
    })?;
    CniResult::parse(&v).map(Some)
}
