//! A real control plane for integration tests, envtest style: upstream `etcd` and
//! `kube-apiserver` (built from their Go modules by `e2e/cluster/build-bins.sh` and
//! cached), started on free local ports with a static admin token, and stopped when
//! dropped. No controller manager runs, so tests observe exactly what the operator
//! writes.

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
    /// Base URL of the API server.
    pub url: String,
    /// Kubeconfig file for tools (kubectl) and the operator binary.
    pub kubeconfig: PathBuf,
    token: String,
}

/// A free local TCP port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Why the tests that need upstream binaries are ignored by a plain `cargo test`.
pub const NEEDS_BINARIES: &str =
    "needs the upstream binaries and the release sluice-server: run by `make test-operator`";

/// The directory holding the upstream binaries (etcd, kube-apiserver, kubectl,
/// prometheus) that `make test-operator` builds once with `e2e/cluster/build-bins.sh`
/// and names in `SLUICE_K8S_BIN`. A test never builds them itself: a plain
/// `cargo test` must not start a 25-minute Go build.
pub fn k8s_bins() -> PathBuf {
    match std::env::var_os("SLUICE_K8S_BIN").filter(|dir| !dir.is_empty()) {
        Some(dir) => dir.into(),
        None => panic!(
            "SLUICE_K8S_BIN is not set: this test {NEEDS_BINARIES} (or set it to the directory `e2e/cluster/build-bins.sh` prints)"
        ),
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

impl ApiServer {
    /// Starts etcd and kube-apiserver and waits until the API server is ready.
    pub fn start() -> Self {
        let bins = k8s_bins();
        let dir = std::env::temp_dir().join(format!("sluice-apiserver-{}", std::process::id()));
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
            kubeconfig: dir.join("kubeconfig"),
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
        server.write_kubeconfig();
        server.wait_ready();
        server
    }

    fn kubeconfig_yaml(&self) -> String {
        self.kubeconfig_yaml_for(&self.token)
    }

    /// A kubeconfig that authenticates with a bearer `token`.
    fn kubeconfig_yaml_for(&self, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster: {{server: \"{}\", insecure-skip-tls-verify: true}}\nusers:\n- name: admin\n  user: {{token: {}}}\ncontexts:\n- name: test\n  context: {{cluster: test, user: admin, namespace: default}}\ncurrent-context: test\n",
            self.url, token
        )
    }

    fn write_kubeconfig(&self) {
        std::fs::write(&self.kubeconfig, self.kubeconfig_yaml()).unwrap();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let kubectl = k8s_bins().join("kubectl");
        loop {
            let ok = Command::new(&kubectl)
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(["get", "--raw", "/readyz"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
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
        self.client_with_token(&self.token).await
    }

    /// A client authenticated by a bearer `token`, such as a ServiceAccount's
    /// from a TokenRequest: what an operator in a pod presents.
    pub async fn client_with_token(&self, token: &str) -> Client {
        let kubeconfig = Kubeconfig::from_yaml(&self.kubeconfig_yaml_for(token)).unwrap();
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .unwrap();
        Client::try_from(config).unwrap()
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

/// How long [`eventually`] waits.
#[allow(dead_code)] // not every file that includes this module polls
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Polls `check` every 200 ms until it returns `Some`, or panics naming `what`
/// after [`TIMEOUT`].
#[allow(dead_code)] // not every file that includes this module polls
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Installs every CRD committed under `crds/` (server-side apply) and waits
/// until each is established.
#[allow(dead_code)] // not every file that includes this module installs CRDs
pub async fn install_crds(client: &Client) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("crds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        install_crd(client, &file).await;
    }
}

/// Installs the CRD in the YAML file `file` (server-side apply) and waits until
/// it is established.
#[allow(dead_code)] // not every file that includes this module installs CRDs
pub async fn install_crd(client: &Client, file: &Path) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::ResourceExt;
    use kube::api::{Api, Patch, PatchParams};

    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition =
        serde_saphyr::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    api.patch(
        &crd.name_any(),
        &PatchParams::apply("sluice-test").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    eventually("the CRD is established", || async {
        let crd = api.get(&crd.name_any()).await.ok()?;
        crd.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;
}

/// The Helm chart `charts/sluice` rendered by the real `helm template` (built
/// with the other upstream binaries) as release `sluice` in `namespace`, with
/// `--set` values `sets`: its objects, CRDs left out.
#[allow(dead_code)] // not every file that includes this module renders the chart
pub fn helm_template(namespace: &str, sets: &[&str]) -> Vec<serde_json::Value> {
    let mut helm = Command::new(k8s_bins().join("helm"));
    helm.args(["template", "sluice"])
        .arg(repo_root().join("charts/sluice"))
        .args(["--namespace", namespace]);
    for set in sets {
        helm.args(["--set", set]);
    }
    let output = helm.output().expect("running helm");
    assert!(
        output.status.success(),
        "helm template {sets:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    serde_saphyr::from_multiple::<serde_json::Value>(&text)
        .expect("helm's output is YAML")
        .into_iter()
        .filter(|object| !object.is_null())
        .collect()
}

/// The objects of `kind` among `objects` (what [`helm_template`] rendered).
#[allow(dead_code)] // not every file that includes this module renders the chart
pub fn of_kind<'a>(objects: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}
