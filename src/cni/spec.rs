//! The CNI protocol's fixed parts (pure): versions, commands, the `CNI_*`
//! environment, error codes and the error object.
//!
//! Spec references are to the CNI specification, versions 1.0.0 and 1.1.0
//! (`SPEC.md`, "Section 2: Execution Protocol" and "Error codes").

use std::collections::BTreeMap;

/// Versions this plugin speaks, oldest first. 0.4.0 is the last version
/// before 1.0.0 and differs only in result shape (`ips[].version`).
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// The newest version, used for answers that have no config to take one from.
pub const LATEST: &str = "1.1.0";

/// A CNI error code (spec: 0-99 are reserved for the spec, 100+ are ours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 1: incompatible CNI version.
    IncompatibleVersion = 1,
    /// 2: unsupported field in network configuration.
    UnsupportedField = 2,
    /// 3: container unknown or does not exist (never returned by DEL).
    UnknownContainer = 3,
    /// 4: invalid necessary environment variables.
    InvalidEnvironment = 4,
    /// 5: I/O failure.
    IoFailure = 5,
    /// 6: failed to decode content.
    DecodeFailure = 6,
    /// 7: invalid network configuration.
    InvalidNetworkConfig = 7,
    /// 11: try again later (a transient condition: a lock, a full subnet
    /// that a pending DEL will free).
    TryAgainLater = 11,
    /// 50: the plugin is not available (STATUS: it cannot serve ADD).
    NotAvailable = 50,
    /// 100: the host refused an operation (netlink, nftables, files).
    HostFailure = 100,
}

/// A CNI error: code, message and details, printed as the spec's error object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    /// The code.
    pub code: Code,
    /// Short message.
    pub msg: String,
    /// Longer explanation (the cause chain).
    pub details: String,
}

impl CniError {
    /// An error with `code`, message and details.
    pub fn new(code: Code, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self { code, msg: msg.into(), details: details.into() }
    }

    /// The spec's error object, in `version`.
    pub fn to_json(&self, version: &str) -> serde_json::Value {
        let mut v = serde_json::json!({ "cniVersion": version, "code": self.code as u32, "msg": self.msg });
        if !self.details.is_empty() {
            v["details"] = self.details.clone().into();
        }
        v
    }
}

/// The verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Add a container to the network.
    Add,
    /// Remove it.
    Del,
    /// Check it is as ADD left it.
    Check,
    /// Report readiness to serve ADD (1.1.0).
    Status,
    /// Remove what attachments outside a valid list left (1.1.0).
    Gc,
    /// Report supported versions.
    Version,
}

impl Command {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "STATUS" => Self::Status,
            "GC" => Self::Gc,
            "VERSION" => Self::Version,
            _ => return None,
        })
    }
}

/// The `CNI_*` parameters of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID` (ADD, DEL, CHECK).
    pub container_id: String,
    /// `CNI_NETNS` (required for ADD and CHECK; DEL tolerates it missing).
    pub netns: Option<String>,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS` as key/value pairs.
    pub args: BTreeMap<String, String>,
    /// `CNI_PATH`: where delegated (IPAM) plugins are looked up.
    pub path: Vec<String>,
}

fn invalid_env(msg: impl Into<String>) -> CniError {
    CniError::new(Code::InvalidEnvironment, msg, "")
}

/// Whether `id` is an acceptable container id: the spec's
/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$` (it also becomes part of file names).
pub fn valid_container_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && id.len() <= 256
}

/// Parse the `CNI_*` variables from `get` (pure: the caller passes the
/// environment lookup).
pub fn params(get: impl Fn(&str) -> Option<String>) -> Result<Params, CniError> {
    let command_s = get("CNI_COMMAND").ok_or_else(|| invalid_env("CNI_COMMAND is not set"))?;
    let command =
        Command::parse(&command_s).ok_or_else(|| invalid_env(format!("unknown CNI_COMMAND {command_s:?}")))?;
    let attachment = matches!(command, Command::Add | Command::Del | Command::Check);
    let container_id = get("CNI_CONTAINERID").unwrap_or_default();
    if attachment && !valid_container_id(&container_id) {
        return Err(invalid_env(format!("CNI_CONTAINERID {container_id:?} is missing or not a valid container id")));
    }
    let ifname = get("CNI_IFNAME").unwrap_or_default();
    if attachment && crate::model::ifname::IfName::new(&ifname).is_err() {
        return Err(invalid_env(format!("CNI_IFNAME {ifname:?} is missing or not a valid interface name")));
    }
    let netns = get("CNI_NETNS").filter(|s| !s.is_empty());
    if matches!(command, Command::Add | Command::Check) && netns.is_none() {
        return Err(invalid_env("CNI_NETNS is not set"));
    }
    let mut args = BTreeMap::new();
    for pair in get("CNI_ARGS").unwrap_or_default().split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| invalid_env(format!("CNI_ARGS entry {pair:?} is not K=V")))?;
        args.insert(k.to_owned(), v.to_owned());
    }
    let path = get("CNI_PATH").unwrap_or_default().split(':').filter(|p| !p.is_empty()).map(str::to_owned).collect();
    Ok(Params { command, container_id, netns, ifname, args, path })
}

/// Check that `version` is one we speak (error code 1 otherwise).
pub fn check_version(version: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&version) {
        return Ok(());
    }
    Err(CniError::new(
        Code::IncompatibleVersion,
        "incompatible CNI versions",
        format!("config is {version:?}, plugin supports {SUPPORTED_VERSIONS:?}"),
    ))
}

/// The answer to `VERSION`.
pub fn version_answer(requested: &str) -> serde_json::Value {
    let version = if SUPPORTED_VERSIONS.contains(&requested) { requested } else { LATEST };
    serde_json::json!({ "cniVersion": version, "supportedVersions": SUPPORTED_VERSIONS })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn add_needs_container_id_ifname_and_netns() {
        let p = params(env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "IgnoreUnknown=1;IP=10.1.0.5"),
            ("CNI_PATH", "/usr/lib/cni:/opt/cni/bin"),
        ]))
        .unwrap();
        assert_eq!(p.command, Command::Add);
        assert_eq!(p.args.get("IP").map(String::as_str), Some("10.1.0.5"));
        assert_eq!(p.path, ["/usr/lib/cni", "/opt/cni/bin"]);
        let err =
            params(env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "abc"), ("CNI_IFNAME", "eth0")])).unwrap_err();
        assert_eq!((err.code, err.msg.as_str()), (Code::InvalidEnvironment, "CNI_NETNS is not set"));
    }

    #[test]
    fn unsafe_ifnames_and_container_ids_are_refused_with_code_4() {
        for (id, ifname) in
            [("abc", "../eth0"), ("abc", "a/b"), ("abc", "sixteen-chars-xx"), ("../x", "eth0"), ("", "eth0")]
        {
            let err =
                params(env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", id), ("CNI_IFNAME", ifname)])).unwrap_err();
            assert_eq!(err.code, Code::InvalidEnvironment, "{id} {ifname}");
        }
    }

    #[test]
    fn del_tolerates_a_missing_netns_and_gc_needs_no_container() {
        let p = params(env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")])).unwrap();
        assert_eq!(p.netns, None);
        assert_eq!(params(env(&[("CNI_COMMAND", "GC")])).unwrap().command, Command::Gc);
        assert_eq!(params(env(&[("CNI_COMMAND", "NOPE")])).unwrap_err().code, Code::InvalidEnvironment);
    }

    #[test]
    fn versions_and_the_error_object_follow_the_spec() {
        assert!(check_version("1.0.0").is_ok() && check_version("1.1.0").is_ok() && check_version("0.4.0").is_ok());
        let err = check_version("0.3.1").unwrap_err();
        assert_eq!(
            err.to_json("1.1.0"),
            serde_json::json!({"cniVersion": "1.1.0", "code": 1, "msg": "incompatible CNI versions",
                "details": "config is \"0.3.1\", plugin supports [\"0.4.0\", \"1.0.0\", \"1.1.0\"]"})
        );
        assert_eq!(
            version_answer("1.0.0"),
            serde_json::json!({"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]})
        );
    }
}
