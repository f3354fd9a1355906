//! A real API server for tests, envtest style (as `operator/tests/support`): upstream
//! `etcd` and `kube-apiserver` from the local cluster's cached build
//! (`e2e/cluster/build-bins.sh`), on free local ports with a static admin token,
//! stopped when dropped. No controller manager runs: tests set what a controller
//! would (a claim's `Bound` phase, say) themselves.
//!
//! The tests using it are `#[ignore]`d, so a plain `cargo test` never needs the Go
//! build; run them with
//! `SLUICE_K8S_BIN=$(e2e/cluster/build-bins.sh --cached) cargo test -p sluice-node-agent -- --include-ignored`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// A running etcd and kube-apiserver.
pub struct ApiServer {
    children: Vec<Child>,
    dir: PathBuf,
    url: String,
    token: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The directory with the upstream binaries: `SLUICE_K8S_BIN`, or what
/// `build-bins.sh --cached` prints (it never builds).
fn k8s_bins() -> PathBuf {
    if let Some(dir) = std::env::var_os("SLUICE_K8S_BIN").filter(|d| !d.is_empty()) {
        return dir.into();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cluster/build-bins.sh");
    let output = Command::new(&script)
        .arg("--cached")
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    let dir = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert!(
        output.status.success() && !dir.is_empty(),
        "the upstream binaries are not built: run e2e/cluster/build-bins.sh (or set SLUICE_K8S_BIN)"
    );
    dir.into()
}

impl ApiServer {
    /// Starts etcd and kube-apiserver and waits until the API server is ready.
    pub fn start() -> Self {
        let bins = k8s_bins();
        let dir = std::env::temp_dir().join(format!(
            "sluice-node-agent-apiserver-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("pki")).unwrap();
        let token = format!("sluice-test-{}", std::process::id());
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{token},admin,admin,system:masters\n"),
        )
        .unwrap();
        let key = dir.join("pki/sa.key");
        let ok = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048")
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "openssl genrsa failed");

        let (client_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let log = |name: &str| std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let etcd = Command::new(bins.join("etcd"))
            .args(["--name", "test", "--data-dir"])
            .arg(dir.join("etcd"))
            .args([
                format!("--listen-client-urls=http://127.0.0.1:{client_port}"),
                format!("--advertise-client-urls=http://127.0.0.1:{client_port}"),
                format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
                format!("--initial-cluster=test=http://127.0.0.1:{peer_port}"),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ])
            .stdout(log("etcd"))
            .stderr(log("etcd"))
            .spawn()
            .expect("starting etcd");
        let mut server = Self {
            children: vec![etcd],
            url: format!("https://127.0.0.1:{api_port}"),
            dir: dir.clone(),
            token,
        };
        let apiserver = Command::new(bins.join("kube-apiserver"))
            .args([
                format!("--etcd-servers=http://127.0.0.1:{client_port}"),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                "--advertise-address=127.0.0.1".into(),
                "--service-cluster-ip-range=10.96.0.0/24".into(),
                format!("--cert-dir={}", dir.join("pki").display()),
                format!("--token-auth-file={}", dir.join("tokens.csv").display()),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", key.display()),
                format!("--service-account-signing-key-file={}", key.display()),
                "--authorization-mode=RBAC".into(),
                // No controller manager creates default ServiceAccounts here.
                "--disable-admission-plugins=ServiceAccount".into(),
                "--enable-priority-and-fairness=false".into(),
                "--profiling=false".into(),
            ])
            .stdout(log("kube-apiserver"))
            .stderr(log("kube-apiserver"))
            .spawn()
            .expect("starting kube-apiserver");
        server.children.push(apiserver);
        std::fs::write(dir.join("kubeconfig"), server.kubeconfig_yaml()).unwrap();
        server.wait_ready(&bins.join("kubectl"));
        server
    }

    fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster: {{server: \"{}\", insecure-skip-tls-verify: true}}\nusers:\n- name: admin\n  user: {{token: {}}}\ncontexts:\n- name: test\n  context: {{cluster: test, user: admin, namespace: default}}\ncurrent-context: test\n",
            self.url, self.token
        )
    }

    fn wait_ready(&mut self, kubectl: &Path) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            // The default namespace, which the API server itself creates, is needed too.
            let ok = Command::new(kubectl)
                .arg("--kubeconfig")
                .arg(self.dir.join("kubeconfig"))
                .args(["get", "namespace", "default"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            for child in &mut self.children {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "a control-plane process exited ({status}); logs in {}",
                        self.dir.display()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready; logs in {}",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// A client authenticated as a cluster admin.
    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::from_yaml(&self.kubeconfig_yaml()).unwrap();
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .unwrap();
        Client::try_from(config).unwrap()
    }

    /// A scratch directory removed with the server.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.join("scratch").join(name)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
