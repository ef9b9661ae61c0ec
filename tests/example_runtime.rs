//! The example runtime (`examples/runtime.rs`) serves a page through its
//! published port: it is built with the suite, run as the unprivileged
//! test user (and as root) in a throwaway topology, its command answers one
//! HTTP request from the host, and once that command exits the runtime has
//! detached: no helper, relay or record is left.

#[macro_use]
mod common;

use common::{Env, Tier, Topology, describe, in_netns};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Serves one request (the page) and exits.
const ONE_PAGE: &str = "import http.server, sys\n\
class H(http.server.BaseHTTPRequestHandler):\n    def do_GET(self):\n        body = b'hello from the example runtime'\n        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)\n\
s = http.server.HTTPServer(('0.0.0.0', int(sys.argv[1])), H); print('serving', flush=True); s.handle_request()\n";

/// The example's binary, built next to the CLI's (`cargo test --all-targets`
/// builds it; a lone `cargo test --test example_runtime` builds it here),
/// copied beside the CLI's shared copy, where the test user can run it.
fn example(env: &Env) -> PathBuf {
    let cli = PathBuf::from(env!("CARGO_BIN_EXE_pelagos-net"));
    let built = cli.parent().unwrap().join("examples/runtime");
    let stale = |p: &PathBuf| {
        let age = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        age(p).is_none() || age(p) < age(&cli)
    };
    if stale(&built) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "--example", "runtime"]).current_dir(env!("CARGO_MANIFEST_DIR"));
        if pelagos_net::fault::ENABLED {
            cmd.args(["--features", "fault-injection"]);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "build the example: {}", describe(&out));
    }
    let who = env.user.as_ref().map_or(0, |u| u.uid);
    let copy = env.bin.with_file_name(format!("runtime-{}-{who}", std::process::id()));
    let tmp = copy.with_extension("tmp");
    std::fs::copy(&built, &tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, &copy).unwrap();
    copy
}

fn get_page(host: &str, port: u16) -> Result<String, String> {
    in_netns(host, move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")?;
                let mut page = String::new();
                s.read_to_string(&mut page)?;
                Ok(page)
            });
            match got {
                Ok(page) if page.contains("200") => return Ok(page),
                _ if Instant::now() > deadline => return Err(format!("no page on 127.0.0.1:{port}: {got:?}")),
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    })
}

fn the_example_runtime_serves_a_page_through_its_published_port(env: Env) {
    let topo = Topology::new(&env);
    let bin = example(&env);
    let port = common::port(28300);
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &topo.host]);
    if let Some(u) = &env.user {
        cmd.args(["setpriv", &format!("--reuid={}", u.uid), &format!("--regid={}", u.gid), "--clear-groups", "--"]);
    }
    cmd.arg(&bin).args([&port.to_string(), "8000", "--", "python3", "-c", ONE_PAGE, "8000"]);
    cmd.env("PELAGOS_NET_RUN_DIR", &topo.run_dir).env("PELAGOS_NET_NETNS_DIR", &topo.netns_dir);
    cmd.env("PELAGOS_NET_CONFIG_DIR", &topo.config_dir);
    cmd.env("HOME", "/tmp").stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let page = match get_page(&topo.host, port) {
        Ok(page) => page,
        Err(why) => {
            let _ = child.kill();
            panic!("{why}; the runtime: {}", describe(&child.wait_with_output().unwrap()))
        }
    };
    assert!(page.contains("hello from the example runtime"), "{page}");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the runtime exits with its command's status: {}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("published 127.0.0.1:{port}:8000/tcp")), "{stderr}");
    topo.assert_clean();
    let _ = std::fs::remove_file(&bin);
}

tier_tests!(rootless, super::Tier::Rootless, [the_example_runtime_serves_a_page_through_its_published_port]);
tier_tests!(root, super::Tier::Root, [the_example_runtime_serves_a_page_through_its_published_port]);
