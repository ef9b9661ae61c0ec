use super::*;
use crate::bridge::network::default_network_def;
use std::collections::BTreeSet;

fn me() -> ProcessId {
    ProcessId { pid: std::process::id(), start_time: 1, pid_ns: None }
}

#[test]
fn addresses_are_distinct_and_released() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LeaseStore::new(tmp.path());
    let def = default_network_def();
    let a = store.allocate(&def, "a", me(), None).unwrap();
    let b = store.allocate(&def, "b", me(), None).unwrap();
    assert_eq!((a.to_string().as_str(), b.to_string().as_str()), ("10.90.0.2", "10.90.0.3"));
    store.release("pelagos0", a, "a").unwrap();
    store.release("pelagos0", a, "a").unwrap();
    assert_eq!(store.leases("pelagos0").unwrap().len(), 1);
    let c = store.allocate(&def, "c", me(), None).unwrap();
    assert_eq!(c.to_string(), "10.90.0.4", "a released address is not reused at once");
    assert!(tmp.path().join("leases/pelagos0/10.90.0.4").is_file(), "one file per lease");
}

#[test]
fn requested_address_is_honoured_or_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LeaseStore::new(tmp.path());
    let def = default_network_def();
    let want: Ipv4Addr = "10.90.0.50".parse().unwrap();
    assert_eq!(store.allocate(&def, "a", me(), Some(want)).unwrap(), want);
    let err = store.allocate(&def, "b", me(), Some(want)).unwrap_err();
    assert_eq!(err.to_string(), "address 10.90.0.50 on network pelagos0 is already leased to a");
    let err = store.allocate(&def, "b", me(), Some("10.90.0.1".parse().unwrap())).unwrap_err();
    assert!(matches!(err, LeaseError::NotAssignable { .. }), "{err}");
}

#[test]
fn a_full_subnet_is_exhausted_and_leaves_no_temp_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LeaseStore::new(tmp.path());
    let mut def = default_network_def();
    def.subnet = "10.90.0.0/30".parse().unwrap();
    store.allocate(&def, "a", me(), None).unwrap();
    let err = store.allocate(&def, "b", me(), None).unwrap_err();
    assert!(matches!(err, LeaseError::Exhausted(_)), "{err}");
    let names: Vec<_> =
        fs::read_dir(tmp.path().join("leases/pelagos0")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(!names.iter().any(|n| n.to_string_lossy().starts_with(TMP_PREFIX)), "{names:?}");
}

#[test]
fn cni_leases_survive_a_sweep_and_release_by_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LeaseStore::new(tmp.path());
    let def = default_network_def();
    let dead = ProcessId { pid: u32::MAX - 1, start_time: 1, pid_ns: None };
    let cni = Lease { id: "c1/eth0".into(), owner: dead, cni: true };
    let a = store.allocate_lease(&def, &cni, None).unwrap();
    store.allocate(&def, "gone", dead, None).unwrap();
    fs::write(tmp.path().join("leases/pelagos0/.tmp-1"), "{").unwrap();
    let sweep = store.sweep("pelagos0", Path::new("/proc"), false, &[]).unwrap();
    assert_eq!(sweep.dead.iter().map(|(_, l)| l.id.as_str()).collect::<Vec<_>>(), ["gone"]);
    assert_eq!(sweep.temp_files, 1);
    assert_eq!(store.leases("pelagos0").unwrap().keys().copied().collect::<Vec<_>>(), [a]);
    assert_eq!(store.release_holder("pelagos0", "c1/eth0").unwrap(), [a]);
    assert!(store.leases("pelagos0").unwrap().is_empty());
}

#[test]
fn a_corrupted_lease_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LeaseStore::new(tmp.path());
    let def = default_network_def();
    let a = store.allocate(&def, "a", me(), None).unwrap();
    fs::write(tmp.path().join(format!("leases/pelagos0/{a}")), "{\"id\":").unwrap();
    let err = store.leases("pelagos0").unwrap_err();
    assert!(err.to_string().contains(&format!("leases/pelagos0/{a} is corrupted")), "{err}");
    assert_ne!(store.allocate(&def, "b", me(), None).unwrap(), a, "a corrupted lease still holds its address");
}

#[test]
fn concurrent_allocations_never_collide() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LeaseStore::new(tmp.path());
    let def = default_network_def();
    let handles: Vec<_> = (0..32)
        .map(|i| {
            let (store, def) = (store.clone(), def.clone());
            std::thread::spawn(move || store.allocate(&def, &format!("c{i}"), me(), None).unwrap())
        })
        .collect();
    let addrs: BTreeSet<Ipv4Addr> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(addrs.len(), 32);
    assert_eq!(store.leases("pelagos0").unwrap().len(), 32);
}
