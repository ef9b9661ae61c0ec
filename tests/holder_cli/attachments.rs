//! Attachments (`attach --network NAME`) to a rootless shared network when
//! the holder is rebuilt (rootless tier).

use super::gaps::{ASK_GATEWAY, LINKS, Netns, TRY_CONNECT};
use super::*;

/// Prints eth0's IPv4 address, or `none`.
const ETH0: &str = "import socket,fcntl,struct
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
try: print(socket.inet_ntoa(fcntl.ioctl(s.fileno(),0x8915,struct.pack('256s',b'eth0'))[20:24]))
except OSError: print('none')";

/// What a namespace attached to `web` as `side` (address `side`, port 80
/// published on the host's 127.0.0.1:`published`) must still have.
struct Attached<'a> {
    topo: &'a Topology,
    env: &'a Env,
    ns: &'a Netns,
    side: String,
    published: u16,
}

impl Attached<'_> {
    /// A new run on the network (which rebuilds a dead holder) resolves
    /// the attachment's name and reaches its server; the namespace has its
    /// address; the published port reaches the server from host loopback.
    fn check(&self, when: &str) {
        let (topo, env) = (self.topo, self.env);
        let out = topo
            .cli(env, &["run", "--network", "web", "--", "python3", "-c", ASK_GATEWAY, "10.90.1.1", "side"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), self.side, "{when}: the name: {}", describe(&out));
        let target = format!("{}:80", self.side);
        let out =
            topo.cli(env, &["run", "--network", "web", "--", "python3", "-c", TRY_CONNECT, &target]).output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(said.starts_with("hello 10.90.1."), "{when}: a run reaches the attachment: {}", describe(&out));
        let out = self.ns.python(topo, env, ETH0, &[]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), self.side, "{when}: its address: {}", describe(&out));
        let local: SocketAddr = format!("127.0.0.1:{}", self.published).parse().unwrap();
        let greeting = topo.in_host(move || greet(local));
        assert_eq!(
            greeting.map_err(|e| e.to_string()),
            Ok("hello 127.0.0.1\n".to_owned()),
            "{when}: the published port"
        );
    }
}

fn an_attachment_gets_its_address_and_ports_back_when_the_holder_is_rebuilt(env: Env) {
    // A run starts the holder; the namespace is made in its user namespace.
    let Some((topo, first, _, ns)) = super::gaps::holder_namespace_scene(&env) else { return };
    // Its loopback is its maker's business (attach leaves it alone): up,
    // so the published port's loopback clients are relayed to 127.0.0.1 there.
    let lo_up = format!(
        "nsenter --user=/proc/{0}/ns/user --net=/proc/{0}/ns/net --preserve-credentials ip link set lo up",
        ns.pid
    );
    let out = super::gaps::as_user(&topo, &env, &lo_up).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let published = port(18500);
    let publish = format!("127.0.0.1:{published}:80");
    let (id, side) = super::gaps::attach_side(&topo, &env, &ns, &["-p", &publish]);
    let server = running_ready(ns.python_cmd(&topo, &env, GREETER, &["80"]));
    // Only the attachment uses the holder now: a rebuild must find the dead
    // holder's user namespace through it.
    first.stop();
    let attached = Attached { topo: &topo, env: &env, ns: &ns, side, published };
    attached.check("before the holder died");
    kill_holder(&topo);
    // The veth goes with the holder's network namespace (asynchronously).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = ns.python(&topo, &env, ETH0, &[]);
        if String::from_utf8_lossy(&out.stdout).trim() == "none" {
            break;
        }
        assert!(Instant::now() < deadline, "the veth outlived the holder: {}", describe(&out));
        std::thread::sleep(Duration::from_millis(50));
    }
    let gc = cli_ok(&topo, &env, &["gc"]);
    assert!(gc.contains("1 attachments given their network back"), "{gc}");
    attached.check("after gc rebuilt the holder");
    kill_holder(&topo);
    attached.check("after the next run rebuilt the holder");
    let pids = holder_pids(&topo);
    cli_ok(&topo, &env, &["detach", &id]);
    let out = ns.python(&topo, &env, LINKS, &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "lo", "detach removes the veth: {}", describe(&out));
    server.stop();
    drop(ns);
    cli_ok(&topo, &env, &["network", "rm", "web"]);
    assert_all_gone(&topo, &pids);
}

tier_tests!(
    rootless_attachment_tier,
    super::super::RootlessEnv,
    [an_attachment_gets_its_address_and_ports_back_when_the_holder_is_rebuilt]
);
