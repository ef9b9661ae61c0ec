//! The CNI result (pure): what ADD prints, what a chained plugin receives
//! as `prevResult`, and what an IPAM plugin answers.
//!
//! Rendered in the config's version: 1.0.0 and 1.1.0 share a shape
//! (1.1.0 adds the interface `mtu`); 0.4.0 adds `ips[].version`. Parsing
//! accepts any of them (0.3.0 and later), so a `prevResult` or an IPAM
//! answer of another version is read the same way; a result of the wrong
//! shape is an error with code 6, never a guess.

use super::spec::{CniError, Code};
use serde_json::{Value, json};
use std::net::Ipv4Addr;

/// One interface of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Name.
    pub name: String,
    /// Hardware address (`aa:bb:...`).
    pub mac: String,
    /// The netns path, for interfaces inside the container.
    pub sandbox: Option<String>,
    /// MTU (rendered from 1.1.0 on).
    pub mtu: Option<u32>,
}

/// One address of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Address.
    pub address: Ipv4Addr,
    /// Prefix length (the subnet's).
    pub prefix: u8,
    /// Gateway.
    pub gateway: Option<Ipv4Addr>,
    /// Index into the interfaces.
    pub interface: Option<usize>,
}

/// One route of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination (`a.b.c.d/n`).
    pub dst: String,
    /// Next hop.
    pub gw: Option<Ipv4Addr>,
}

/// A result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CniResult {
    /// Interfaces.
    pub interfaces: Vec<Interface>,
    /// Addresses.
    pub ips: Vec<IpConfig>,
    /// Routes.
    pub routes: Vec<Route>,
    /// DNS settings, passed through as given (`{}` when none).
    pub dns: Value,
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

impl CniResult {
    /// The result as JSON in `version`.
    pub fn to_json(&self, version: &str) -> Value {
        let old = version.starts_with("0.");
        let with_mtu = version == "1.1.0";
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut v = json!({ "name": i.name, "mac": i.mac });
                if let Some(s) = &i.sandbox {
                    v["sandbox"] = s.clone().into();
                }
                if let (true, Some(mtu)) = (with_mtu, i.mtu) {
                    v["mtu"] = mtu.into();
                }
                v
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut v = json!({ "address": format!("{}/{}", ip.address, ip.prefix) });
                if old {
                    v["version"] = "4".into();
                }
                if let Some(gw) = ip.gateway {
                    v["gateway"] = gw.to_string().into();
                }
                if let Some(i) = ip.interface {
                    v["interface"] = i.into();
                }
                v
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut v = json!({ "dst": r.dst });
                if let Some(gw) = r.gw {
                    v["gw"] = gw.to_string().into();
                }
                v
            })
            .collect();
        let dns = if self.dns.is_object() { self.dns.clone() } else { json!({}) };
        json!({ "cniVersion": version, "interfaces": interfaces, "ips": ips, "routes": routes, "dns": dns })
    }

    /// Parse a result of any version from 0.3.0 on (IPv6 addresses are
    /// skipped: this network is IPv4-only).
    pub fn parse(v: &Value) -> Result<Self, CniError> {
        let wrong = |what: &str| CniError::new(Code::DecodeFailure, "result has the wrong shape", what.to_owned());
        let obj = v.as_object().ok_or_else(|| wrong("not an object"))?;
        let list = |key: &str| -> Result<Vec<Value>, CniError> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(a)) => Ok(a.clone()),
                Some(_) => Err(wrong(&format!("\"{key}\" is not a list"))),
            }
        };
        let str_of = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
        let mut out = CniResult { dns: obj.get("dns").cloned().unwrap_or_else(|| json!({})), ..Default::default() };
        for i in list("interfaces")? {
            let name = str_of(&i, "name").ok_or_else(|| wrong("an interface has no name"))?;
            out.interfaces.push(Interface {
                name,
                mac: str_of(&i, "mac").unwrap_or_default(),
                sandbox: str_of(&i, "sandbox"),
                mtu: i.get("mtu").and_then(Value::as_u64).map(|m| m as u32),
            });
        }
        for ip in list("ips")? {
            let address = str_of(&ip, "address").ok_or_else(|| wrong("an ips entry has no address"))?;
            let (addr, prefix) = address.split_once('/').ok_or_else(|| wrong("an address has no prefix"))?;
            let Ok(addr) = addr.parse::<std::net::IpAddr>() else { return Err(wrong("an address does not parse")) };
            let prefix: u8 = prefix.parse().map_err(|_| wrong("an address prefix does not parse"))?;
            let std::net::IpAddr::V4(address) = addr else { continue };
            if prefix > 32 {
                return Err(wrong("an address prefix is over 32"));
            }
            let gateway = match str_of(&ip, "gateway") {
                Some(g) => Some(g.parse().map_err(|_| wrong("a gateway does not parse"))?),
                None => None,
            };
            let interface = match ip.get("interface") {
                None | Some(Value::Null) => None,
                Some(i) => Some(i.as_u64().ok_or_else(|| wrong("an interface index is not a number"))? as usize),
            };
            out.ips.push(IpConfig { address, prefix, gateway, interface });
        }
        for r in list("routes")? {
            let dst = str_of(&r, "dst").ok_or_else(|| wrong("a route has no dst"))?;
            let gw = match str_of(&r, "gw") {
                Some(g) => g.parse().ok(),
                None => None,
            };
            out.routes.push(Route { dst, gw });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface { name: "pn-web".into(), mac: "02:00:00:00:00:01".into(), sandbox: None, mtu: Some(1500) },
                Interface {
                    name: "pc0123456789ab".into(),
                    mac: "02:00:00:00:00:02".into(),
                    sandbox: None,
                    mtu: Some(1500),
                },
                Interface {
                    name: "eth0".into(),
                    mac: "02:00:00:00:00:03".into(),
                    sandbox: Some("/run/netns/c1".into()),
                    mtu: Some(1500),
                },
            ],
            ips: vec![IpConfig {
                address: "10.1.0.2".parse().unwrap(),
                prefix: 24,
                gateway: Some("10.1.0.1".parse().unwrap()),
                interface: Some(2),
            }],
            routes: vec![Route { dst: "0.0.0.0/0".into(), gw: Some("10.1.0.1".parse().unwrap()) }],
            dns: json!({}),
        }
    }

    #[test]
    fn a_1_0_0_result_has_the_reference_shape() {
        assert_eq!(
            sample().to_json("1.0.0"),
            json!({"cniVersion":"1.0.0",
                "interfaces":[{"name":"pn-web","mac":"02:00:00:00:00:01"},{"name":"pc0123456789ab","mac":"02:00:00:00:00:02"},
                    {"name":"eth0","mac":"02:00:00:00:00:03","sandbox":"/run/netns/c1"}],
                "ips":[{"address":"10.1.0.2/24","gateway":"10.1.0.1","interface":2}],
                "routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"}],"dns":{}})
        );
    }

    #[test]
    fn versions_differ_only_where_the_spec_does() {
        let v11 = sample().to_json("1.1.0");
        assert_eq!(v11["interfaces"][2]["mtu"], 1500);
        let v04 = sample().to_json("0.4.0");
        assert_eq!(v04["ips"][0]["version"], "4");
        assert!(v04["interfaces"][2].get("mtu").is_none());
    }

    #[test]
    fn results_round_trip_and_ipv6_is_skipped() {
        let mut v = sample().to_json("0.4.0");
        v["ips"].as_array_mut().unwrap().push(json!({"version":"6","address":"fd00::2/64","interface":2}));
        let mut back = CniResult::parse(&v).unwrap();
        for i in &mut back.interfaces {
            i.mtu = Some(1500);
        }
        assert_eq!(back, sample());
    }

    #[test]
    fn wrong_shapes_are_code_6() {
        for bad in [json!([]), json!({"ips": {}}), json!({"ips":[{"address":"10.1.0.2"}]}), json!({"interfaces":[{}]})]
        {
            assert_eq!(CniResult::parse(&bad).unwrap_err().code, Code::DecodeFailure, "{bad}");
        }
    }
}
