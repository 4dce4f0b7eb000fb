//! The Kubernetes package (`deploy/kubernetes`): what it installs is what
//! this repository tests.
//!
//! - The operator resources (PrometheusRules, the Grafana dashboard's
//!   ConfigMap, the AlertmanagerConfig example) and the package's copy of
//!   the default rules are generated from `deploy/prometheus`,
//!   `deploy/grafana`, `deploy/alertmanager.yml` and `rules/`, so they never
//!   drift: a stale one fails here, and
//!   `INCIDENTD_UPDATE_DEPLOY=1 cargo test --test kubernetes` rewrites them.
//! - Every variant (both modes, and example overlays that change values) is
//!   rendered with the real kustomize, and every object is validated
//!   against the Kubernetes and prometheus-operator schemas
//!   (`deploy/kubernetes/tests/validate.py`).
//! - The rendered workloads pass an SRE's checklist (non-root, read-only
//!   root, probes, resources, credentials only as files, a grace period
//!   longer than the drain, PDB, monitors that select the Service).
//! - The rendered single-mode pod runs: its ConfigMaps and Secret are laid
//!   out where its mounts put them, the real binary starts with the
//!   container's arguments, answers its probes and demands its tokens; the
//!   distributed mode's configuration passes `incidentd check`.
//!
//! Rendering needs kustomize (`INCIDENTD_KUSTOMIZE`, else `kustomize` or
//! `kubectl` on `PATH`); validation needs Python's `kubernetes-validate`
//! and the npm packages of `deploy/kubernetes/tests` (`npm ci --prefix
//! deploy/kubernetes/tests`). Without them those tests skip with one line,
//! unless `INCIDENTD_TEST_KUBERNETES=1` (as `.ci/run` sets): then a missing
//! tool is a failure.

mod support;

use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PACKAGE: &str = "deploy/kubernetes";

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Single,
    Distributed,
}

/// A kustomization CI renders and checks.
struct Variant {
    dir: &'static str,
    mode: Mode,
    /// Carries the prometheus-operator component.
    monitored: bool,
    /// Mounts ConfigMaps the user made, which the render does not contain.
    user_config_maps: bool,
}

const VARIANTS: &[Variant] = &[
    Variant {
        dir: "single",
        mode: Mode::Single,
        monitored: false,
        user_config_maps: false,
    },
    Variant {
        dir: "distributed",
        mode: Mode::Distributed,
        monitored: false,
        user_config_maps: false,
    },
    Variant {
        dir: "examples/single-monitored",
        mode: Mode::Single,
        monitored: true,
        user_config_maps: false,
    },
    Variant {
        dir: "examples/distributed-production",
        mode: Mode::Distributed,
        monitored: true,
        user_config_maps: false,
    },
    Variant {
        dir: "examples/existing-configmaps",
        mode: Mode::Single,
        monitored: false,
        user_config_maps: true,
    },
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

// ---------------------------------------------------------------- generation

/// The header of a generated file: where it comes from and how to remake it.
fn generated_header(source: &str) -> String {
    format!(
        "# Generated from {source} by tests/kubernetes.rs: edit that file, then run\n\
         # INCIDENTD_UPDATE_DEPLOY=1 cargo test --test kubernetes\n"
    )
}

/// `text` with every non-empty line indented by `by` spaces.
fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines()
        .map(|l| {
            if l.trim().is_empty() {
                String::new()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Labels every generated object carries; `release` is what
/// kube-prometheus-stack's Prometheus selects rules and monitors by.
const OPERATOR_LABELS: &str = "    app.kubernetes.io/name: incidentd\n    app.kubernetes.io/instance: incidentd\n    release: kube-prometheus-stack\n";

/// A Prometheus rule file as a PrometheusRule: the file's `groups:` is the
/// resource's `spec.groups`, comments and all.
fn prometheus_rule(name: &str, source: &str) -> String {
    let text = read(&repo().join(source));
    assert!(
        text.lines().any(|l| l == "groups:"),
        "{source}: no top-level `groups:`"
    );
    format!(
        "{}apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata:\n  name: {name}\n  labels:\n{OPERATOR_LABELS}spec:\n{}",
        generated_header(source),
        indent(&text, 2)
    )
}

/// The dashboard as a ConfigMap kube-prometheus-stack's Grafana sidecar
/// loads (label `grafana_dashboard: "1"`).
fn dashboard_config_map() -> String {
    let source = "deploy/grafana/incidentd-dashboard.json";
    let text = read(&repo().join(source));
    let _: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    format!(
        "{}# kube-prometheus-stack's Grafana sidecar loads ConfigMaps labelled\n\
         # grafana_dashboard=\"1\" from its own namespace, or from all with\n\
         # grafana.sidecar.dashboards.searchNamespace=ALL.\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: incidentd-dashboard\n  labels:\n\
         {OPERATOR_LABELS}    grafana_dashboard: \"1\"\ndata:\n  incidentd-dashboard.json: |\n{}",
        generated_header(source),
        indent(&text, 4)
    )
}

/// `deploy/alertmanager.yml`'s route and receiver as an AlertmanagerConfig
/// for prometheus-operator's Alertmanager, the token from the package's
/// Secret.
fn alertmanager_config() -> String {
    let source = "deploy/alertmanager.yml";
    let am: Value = serde_yaml_ng::from_str(&read(&repo().join(source))).expect("alertmanager.yml");
    let route = &am["route"];
    let receiver = am["receivers"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == route["receiver"]))
        .expect("the route's receiver");
    let hook = &receiver["webhook_configs"][0];
    let url = hook["url"].as_str().expect("webhook url");
    let path = &url[url.find("/api/").expect("an /api/ path")..];
    let group_by: Vec<String> = route["group_by"]
        .as_array()
        .expect("group_by")
        .iter()
        .map(|g| format!("'{}'", g.as_str().expect("label")))
        .collect();
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    const TEMPLATE: &str = r#"# An example, not part of a kustomization: apply it in incidentd's namespace
# (the Secret must be there) with your Alertmanager's selector labels. It
# routes every alert to incidentd, as deploy/alertmanager.yml does.
#
# prometheus-operator confines an AlertmanagerConfig to alerts whose
# namespace label is its own namespace, unless the Alertmanager resource sets
# alertmanagerConfigMatcherStrategy.type: None (kube-prometheus-stack:
# alertmanager.alertmanagerSpec.alertmanagerConfigMatcherStrategy). Change
# the url's namespace (.incidentd.) to the one incidentd runs in.
apiVersion: monitoring.coreos.com/v1alpha1
kind: AlertmanagerConfig
metadata:
  name: incidentd
  labels:
    app.kubernetes.io/name: incidentd
    app.kubernetes.io/instance: incidentd
spec:
  route:
    receiver: RECEIVER
    groupBy: [GROUP_BY]
    groupWait: WAIT
    groupInterval: INTERVAL
    repeatInterval: REPEAT
  receivers:
    - name: RECEIVER
      webhookConfigs:
        - url: http://incidentd.incidentd.svc:9797PATH
          sendResolved: RESOLVED
          maxAlerts: MAX
          httpConfig:
            authorization:
              type: Bearer
              credentials:
                name: incidentd-secrets
                key: webhook-token
"#;
    let mut text = generated_header(source) + TEMPLATE;
    for (key, value) in [
        ("RECEIVER", s(&route["receiver"])),
        ("GROUP_BY", group_by.join(", ")),
        ("WAIT", s(&route["group_wait"])),
        ("INTERVAL", s(&route["group_interval"])),
        ("REPEAT", s(&route["repeat_interval"])),
        ("PATH", path.to_string()),
        ("RESOLVED", s(&hook["send_resolved"])),
        ("MAX", s(&hook["max_alerts"])),
    ] {
        text = text.replace(key, &value);
    }
    text
}

/// The default rule files (`rules/*.yaml`), by name.
fn default_rule_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo().join("rules"))
        .expect("rules/")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// Every generated file of the package: (path under the package, content).
fn generated_files() -> Vec<(String, String)> {
    let mut files = vec![
        (
            "monitoring/prometheusrule-slo.yaml".to_string(),
            prometheus_rule("incidentd-slo", "deploy/prometheus/incidentd-slo.rules.yml"),
        ),
        (
            "monitoring/prometheusrule-outbound.yaml".to_string(),
            prometheus_rule(
                "incidentd-outbound",
                "deploy/prometheus/incidentd-outbound.rules.yml",
            ),
        ),
        (
            "monitoring/prometheusrule-kpi.yaml".to_string(),
            prometheus_rule("incidentd-kpi", "deploy/prometheus/incidentd-kpi.rules.yml"),
        ),
        (
            "monitoring/grafana-dashboard.yaml".to_string(),
            dashboard_config_map(),
        ),
        (
            "examples/alertmanagerconfig.yaml".to_string(),
            alertmanager_config(),
        ),
    ];
    for name in default_rule_files() {
        files.push((
            format!("base/rules/{name}"),
            read(&repo().join("rules").join(&name)),
        ));
    }
    files
}

#[test]
fn operator_resources_and_rule_copies_are_generated_from_their_sources() {
    let package = repo().join(PACKAGE);
    let update = std::env::var("INCIDENTD_UPDATE_DEPLOY").as_deref() == Ok("1");
    let mut stale = Vec::new();
    for (path, want) in generated_files() {
        let file = package.join(&path);
        if std::fs::read_to_string(&file).ok().as_deref() == Some(want.as_str()) {
            continue;
        }
        if update {
            std::fs::write(&file, &want).unwrap_or_else(|e| panic!("write {path}: {e}"));
        } else {
            stale.push(path);
        }
    }
    assert!(
        stale.is_empty(),
        "{PACKAGE}: out of date with their sources: {stale:?}; run \
         INCIDENTD_UPDATE_DEPLOY=1 cargo test --test kubernetes"
    );
    // Nothing else is in the copy of the rules, and the base lists each one
    // (kustomize cannot glob).
    let mut copied: Vec<String> = std::fs::read_dir(package.join("base/rules"))
        .expect("base/rules")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    copied.sort();
    assert_eq!(
        copied,
        default_rule_files(),
        "base/rules/ holds exactly rules/*.yaml"
    );
    let base: Value =
        serde_yaml_ng::from_str(&read(&package.join("base/kustomization.yaml"))).expect("base");
    let listed: Vec<String> = base["configMapGenerator"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["name"] == "incidentd-rules"))
        .and_then(|g| g["files"].as_array())
        .expect("the incidentd-rules generator")
        .iter()
        .map(|f| {
            f.as_str()
                .unwrap_or_default()
                .trim_start_matches("rules/")
                .to_string()
        })
        .collect();
    assert_eq!(
        listed,
        default_rule_files(),
        "base/kustomization.yaml lists every rule file"
    );
}

// ----------------------------------------------------------------- rendering

/// How to run kustomize: its own binary, or `kubectl kustomize`.
enum Kustomize {
    Own(PathBuf),
    Kubectl(PathBuf),
}

fn required() -> bool {
    std::env::var("INCIDENTD_TEST_KUBERNETES").as_deref() == Ok("1")
}

/// kustomize, or `None` (after saying why) when the test should skip.
fn kustomize(test: &str) -> Option<Kustomize> {
    if let Ok(p) = std::env::var("INCIDENTD_KUSTOMIZE") {
        return Some(Kustomize::Own(PathBuf::from(p)));
    }
    if let Some(p) = support::find_program(&["kustomize"]) {
        return Some(Kustomize::Own(p));
    }
    if let Some(p) = support::find_program(&["kubectl"]) {
        return Some(Kustomize::Kubectl(p));
    }
    assert!(
        !required(),
        "INCIDENTD_TEST_KUBERNETES=1 but no kustomize (INCIDENTD_KUSTOMIZE, kustomize or kubectl \
         on PATH): .ci/run installs Debian's kustomize"
    );
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "skipping {test}: no kustomize (set INCIDENTD_KUSTOMIZE or put kustomize on PATH)"
    );
    None
}

/// `kustomize build` of a directory of the package.
fn render(k: &Kustomize, dir: &str) -> String {
    let path = repo().join(PACKAGE).join(dir);
    let out = match k {
        Kustomize::Own(bin) => Command::new(bin).arg("build").arg(&path).output(),
        Kustomize::Kubectl(bin) => Command::new(bin).arg("kustomize").arg(&path).output(),
    }
    .unwrap_or_else(|e| panic!("running kustomize: {e}"));
    assert!(
        out.status.success(),
        "kustomize build {dir} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The objects of a multi-document YAML text.
fn objects(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("a YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn of_kind<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

#[test]
fn every_variant_renders_and_validates_against_the_schemas() {
    let Some(k) = kustomize("every_variant_renders_and_validates_against_the_schemas") else {
        return;
    };
    let tools = repo().join(PACKAGE).join("tests");
    if !tools.join("node_modules").is_dir() {
        assert!(
            !required(),
            "INCIDENTD_TEST_KUBERNETES=1 but {} has no node_modules: npm ci --prefix {}",
            tools.display(),
            tools.display()
        );
        eprintln!(
            "skipping schema validation: npm ci --prefix {}",
            tools.display()
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    for v in VARIANTS {
        let file = dir.path().join(format!("{}.yaml", v.dir.replace('/', "-")));
        std::fs::write(&file, render(&k, v.dir)).expect("write render");
        files.push(file);
    }
    // The example that is not part of a kustomization, as shipped.
    files.push(
        repo()
            .join(PACKAGE)
            .join("examples/alertmanagerconfig.yaml"),
    );
    for file in &files {
        let out = Command::new("python3")
            .arg(tools.join("validate.py"))
            .arg(file)
            .output()
            .expect("run python3");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{} does not validate:\n{text}",
            file.display()
        );
        // Every object was checked by a schema: none passed unseen.
        let n = objects(&read(file)).len();
        let ok = text.lines().filter(|l| l.starts_with("ok ")).count();
        assert!(
            ok >= n,
            "{}: {n} objects, {ok} validated:\n{text}",
            file.display()
        );
    }
    // And the validator refuses what the cluster would: a typo in a
    // ServiceMonitor and a field Kubernetes does not know.
    let single = read(&files[0]);
    for (what, broken) in [
        (
            "an unknown container field",
            single.replacen("readOnlyRootFilesystem: true", "readOnlyRootFS: true", 1),
        ),
        (
            "a word where a count belongs",
            single.replacen("replicas: 1", "replicas: one", 1),
        ),
    ] {
        assert_ne!(broken, single, "{what}: the render changed");
        let bad = dir.path().join("broken.yaml");
        std::fs::write(&bad, broken).expect("write");
        let out = Command::new("python3")
            .arg(tools.join("validate.py"))
            .arg(&bad)
            .output()
            .expect("run python3");
        assert!(!out.status.success(), "the validator accepted {what}");
    }
}

// ----------------------------------------------------------------- checklist

/// The rendered workload of a mode and its one container.
fn workload(objs: &[Value], mode: Mode) -> (&Value, &Value) {
    let kind = match mode {
        Mode::Single => "StatefulSet",
        Mode::Distributed => "Deployment",
    };
    let all = of_kind(objs, kind);
    assert_eq!(all.len(), 1, "one {kind}");
    let w = all[0];
    let containers = w["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    (w, &containers[0])
}

/// The rendered incidentd.toml the workload mounts, if rendered.
fn config_text(objs: &[Value], w: &Value) -> Option<String> {
    let volumes = w["spec"]["template"]["spec"]["volumes"].as_array()?;
    let cm = volumes.iter().find(|v| v["name"] == "config")?["configMap"]["name"].as_str()?;
    find(objs, "ConfigMap", cm)?["data"]["incidentd.toml"]
        .as_str()
        .map(str::to_string)
}

/// A duration of the config's form (`5s`, `2m`, `1h`), in seconds.
fn seconds(text: &str) -> u64 {
    let (n, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("duration {text:?}"));
    match unit {
        "ms" => 0,
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        other => panic!("duration unit {other:?}"),
    }
}

/// One key of a TOML text (`section.key`), as a string.
fn toml_get(text: &str, key: &str) -> Option<String> {
    let c = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .expect("the packaged incidentd.toml is TOML");
    c.get_string(key).ok()
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

#[test]
fn rendered_workloads_pass_the_production_checklist() {
    let Some(k) = kustomize("rendered_workloads_pass_the_production_checklist") else {
        return;
    };
    for v in VARIANTS {
        let objs = objects(&render(&k, v.dir));
        let at = v.dir;
        let (w, c) = workload(&objs, v.mode);
        let pod = &w["spec"]["template"]["spec"];
        let pod_labels = &w["spec"]["template"]["metadata"]["labels"];
        assert!(
            labels_match(&w["spec"]["selector"]["matchLabels"], pod_labels),
            "{at}: selector"
        );

        // Security.
        let psc = &pod["securityContext"];
        assert_eq!(psc["runAsNonRoot"], true, "{at}: runAsNonRoot");
        assert!(
            psc["runAsUser"].as_u64().is_some_and(|u| u > 0),
            "{at}: runAsUser"
        );
        assert_eq!(
            psc["seccompProfile"]["type"], "RuntimeDefault",
            "{at}: seccomp"
        );
        assert_eq!(
            pod["automountServiceAccountToken"], false,
            "{at}: no API token"
        );
        let csc = &c["securityContext"];
        assert_eq!(csc["readOnlyRootFilesystem"], true, "{at}: read-only root");
        assert_eq!(
            csc["allowPrivilegeEscalation"], false,
            "{at}: no escalation"
        );
        assert_eq!(
            csc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{at}: caps"
        );
        // Credentials only as files: no Secret reaches the environment.
        let text = serde_json::to_string(w).expect("json");
        assert!(
            !text.contains("secretKeyRef") && !text.contains("secretRef"),
            "{at}: a Secret in the environment"
        );

        // Probes on the daemon's endpoints, on a port the container has.
        let ports = c["ports"].as_array().expect("ports");
        let port_named = |p: &Value| {
            ports
                .iter()
                .find(|cp| cp["name"] == *p || cp["containerPort"] == *p)
                .unwrap_or_else(|| panic!("{at}: no container port {p}"))
        };
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{at}");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{at}");
        port_named(&c["livenessProbe"]["httpGet"]["port"]);
        port_named(&c["readinessProbe"]["httpGet"]["port"]);
        for r in ["cpu", "memory"] {
            assert!(
                c["resources"]["requests"][r].is_string(),
                "{at}: request {r}"
            );
        }
        assert!(
            c["resources"]["limits"]["memory"].is_string(),
            "{at}: memory limit"
        );
        let image = c["image"].as_str().expect("image");
        assert!(
            image.ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))),
            "{at}: image {image} is not this version"
        );

        // The Service reaches the pods on the container's port.
        let svc = find(&objs, "Service", "incidentd").unwrap_or_else(|| panic!("{at}: Service"));
        assert!(
            labels_match(&svc["spec"]["selector"], pod_labels),
            "{at}: Service selector"
        );
        let svc_port = &svc["spec"]["ports"][0];
        let target = port_named(&svc_port["targetPort"]);

        // Every volume mounted exists; data and /tmp are writable.
        let volumes = pod["volumes"].as_array().expect("volumes");
        let claims: Vec<&str> = w["spec"]["volumeClaimTemplates"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|t| t["metadata"]["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        let mounts = c["volumeMounts"].as_array().expect("mounts");
        for m in mounts {
            let name = m["name"].as_str().expect("mount name");
            let vol = volumes.iter().find(|v| v["name"] == name);
            assert!(
                vol.is_some() || claims.contains(&name),
                "{at}: mount {name} has no volume"
            );
            if let Some(cm) = vol.and_then(|v| v["configMap"]["name"].as_str()) {
                assert!(
                    v.user_config_maps || find(&objs, "ConfigMap", cm).is_some(),
                    "{at}: ConfigMap {cm} is not rendered"
                );
            }
        }
        let mount_of = |path: &str| {
            mounts
                .iter()
                .filter(|m| path.starts_with(m["mountPath"].as_str().unwrap_or("\0")))
                .max_by_key(|m| m["mountPath"].as_str().map_or(0, str::len))
        };
        // The configuration, for `serve` and for commands run in the pod.
        let config_path = c["env"]
            .as_array()
            .and_then(|e| e.iter().find(|v| v["name"] == "INCIDENTD_CONFIG"))
            .and_then(|v| v["value"].as_str())
            .unwrap_or_else(|| panic!("{at}: no INCIDENTD_CONFIG"));
        let config_mount = mount_of(config_path).unwrap_or_else(|| panic!("{at}: {config_path}"));
        assert_eq!(config_mount["name"], "config", "{at}: {config_path}");
        let tmp = mount_of("/tmp/x").unwrap_or_else(|| panic!("{at}: /tmp is not writable"));
        assert_ne!(tmp["readOnly"], true, "{at}: /tmp read-only");

        // Rules and CMDB reload in place: their ConfigMaps keep their names
        // (no content hash), the configuration's carries one and rolls pods.
        if !v.user_config_maps {
            for (vol, name) in [("rules", "incidentd-rules"), ("cmdb", "incidentd-cmdb")] {
                let got =
                    volumes.iter().find(|x| x["name"] == vol).expect(vol)["configMap"]["name"]
                        .as_str();
                assert_eq!(got, Some(name), "{at}: {vol} ConfigMap name");
            }
            let cfg = volumes
                .iter()
                .find(|x| x["name"] == "config")
                .expect("config")["configMap"]["name"]
                .as_str()
                .unwrap_or_default();
            assert!(
                cfg.starts_with("incidentd-config-"),
                "{at}: config has no hash: {cfg}"
            );

            let toml = config_text(&objs, w).unwrap_or_else(|| panic!("{at}: config rendered"));
            let listen = toml_get(&toml, "listen").expect("listen");
            assert_eq!(
                listen
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse::<u64>().ok()),
                target["containerPort"].as_u64(),
                "{at}: the daemon listens on the Service's target port"
            );
            let data_dir = toml_get(&toml, "data_dir").expect("data_dir");
            let data = mount_of(&format!("{data_dir}/x")).expect("data_dir mounted");
            assert_ne!(data["readOnly"], true, "{at}: data_dir read-only");
            // Every file the configuration names is on a mount.
            for path in toml
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .flat_map(|l| l.split('"'))
                .filter(|s| s.starts_with("/etc/"))
            {
                assert!(mount_of(path).is_some(), "{at}: {path} is on no mount");
            }
            // The grace period outlasts the drain: the shutdown delay,
            // request_timeout + 2 s for the requests in flight, then the
            // flush (and in distributed mode the partitions' handover).
            let delay = toml_get(&toml, "http.shutdown_delay").map_or(0, |d| seconds(&d));
            let requests = toml_get(&toml, "http.request_timeout").map_or(30, |d| seconds(&d));
            let handover = match v.mode {
                Mode::Single => 10,
                Mode::Distributed => 30,
            };
            let grace = pod["terminationGracePeriodSeconds"]
                .as_u64()
                .expect("grace");
            assert!(
                grace >= delay + requests + 2 + handover,
                "{at}: terminationGracePeriodSeconds {grace} < {delay} + {requests} + 2 + {handover}"
            );
            assert!(
                delay > 0,
                "{at}: no shutdown delay for endpoint propagation"
            );
            if v.mode == Mode::Distributed {
                assert!(toml_get(&toml, "store.url").is_some_and(|u| u.starts_with("postgres")));
                assert!(
                    toml_get(&toml, "kafka.ingest_topic").is_some(),
                    "{at}: ingest topic"
                );
                assert!(
                    toml_get(&toml, "store.password_file").is_some(),
                    "{at}: the database password comes from a file"
                );
            }
        }

        match v.mode {
            Mode::Single => {
                assert_eq!(w["spec"]["replicas"], 1, "{at}: one SQLite writer");
                assert_eq!(claims, ["data"], "{at}: the data claim");
                let sn = w["spec"]["serviceName"].as_str().expect("serviceName");
                assert!(
                    find(&objs, "Service", sn).is_some(),
                    "{at}: serviceName {sn}"
                );
            }
            Mode::Distributed => {
                assert!(w["spec"]["replicas"].as_u64() >= Some(2), "{at}: replicas");
                let pdbs = of_kind(&objs, "PodDisruptionBudget");
                assert_eq!(pdbs.len(), 1, "{at}: a PDB");
                assert!(labels_match(
                    &pdbs[0]["spec"]["selector"]["matchLabels"],
                    pod_labels
                ));
                assert_eq!(pdbs[0]["spec"]["maxUnavailable"], 1, "{at}: one at a time");
            }
        }

        // The operator's resources point at what is rendered.
        let monitors = of_kind(&objs, "ServiceMonitor");
        assert_eq!(
            monitors.len(),
            usize::from(v.monitored),
            "{at}: ServiceMonitor"
        );
        if let Some(m) = monitors.first() {
            assert!(labels_match(
                &m["spec"]["selector"]["matchLabels"],
                &svc["metadata"]["labels"]
            ));
            assert_eq!(
                m["spec"]["endpoints"][0]["port"], svc_port["name"],
                "{at}: port"
            );
            assert_eq!(m["spec"]["endpoints"][0]["path"], "/metrics", "{at}: path");
            assert_eq!(of_kind(&objs, "PrometheusRule").len(), 3, "{at}: rules");
            let dash = find(&objs, "ConfigMap", "incidentd-dashboard").expect("dashboard");
            assert_eq!(dash["metadata"]["labels"]["grafana_dashboard"], "1");
            let json: Value = serde_json::from_str(
                dash["data"]["incidentd-dashboard.json"]
                    .as_str()
                    .expect("json"),
            )
            .expect("dashboard JSON");
            assert_eq!(json["uid"], "incidentd-overview");
        }
    }
}

// ------------------------------------------------------------- the pod runs

/// A rendered pod laid out under a directory: each mount's content where
/// the mount puts it (the directory standing for `/`), the configuration's
/// absolute paths and listen address rewritten to match.
struct Pod {
    root: tempfile::TempDir,
    args: Vec<String>,
    /// The container's environment (plain values), paths rewritten.
    env: Vec<(String, String)>,
    port: u16,
    /// Content of each Secret key written (all made up here).
    secrets: Vec<(String, String)>,
}

impl Pod {
    /// `settings`: configuration lines to replace, by their start (the
    /// servers the pod would reach, swapped for the test's).
    fn lay_out(objs: &[Value], mode: Mode, settings: &[(&str, String)]) -> Pod {
        let root = tempfile::tempdir().expect("tempdir");
        let (w, c) = workload(objs, mode);
        let volumes = w["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .expect("volumes");
        let config = config_text(objs, w).expect("config rendered");
        let mounts: Vec<String> = c["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .map(|m| m["mountPath"].as_str().expect("path").to_string())
            .collect();
        let port = support::free_ports(1)[0];
        let here = |p: &str| -> String {
            match mounts.iter().find(|m| p.starts_with(m.as_str())) {
                Some(_) => format!("{}{p}", root.path().display()),
                None => p.to_string(),
            }
        };
        let rewrite = |text: &str| -> String {
            let text: String = text
                .lines()
                .map(
                    |l| match settings.iter().find(|(start, _)| l.starts_with(start)) {
                        Some((_, line)) => format!("{line}\n"),
                        None => format!("{l}\n"),
                    },
                )
                .collect();
            text.split('"')
                .enumerate()
                .map(|(i, part)| {
                    if i % 2 == 1 && part.starts_with('/') {
                        here(part)
                    } else if i % 2 == 1 && part.starts_with("0.0.0.0:") {
                        format!("127.0.0.1:{port}")
                    } else {
                        part.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\"")
        };
        let mut secrets = Vec::new();
        for m in c["volumeMounts"].as_array().expect("mounts") {
            let path = m["mountPath"].as_str().expect("mountPath");
            let dir = root.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(&dir).expect("mkdir");
            let vol = volumes.iter().find(|v| v["name"] == m["name"]);
            if let Some(cm) = vol.and_then(|v| v["configMap"]["name"].as_str()) {
                let cm = find(objs, "ConfigMap", cm).expect("ConfigMap rendered");
                for (key, value) in cm["data"].as_object().expect("data") {
                    let text = value.as_str().expect("text");
                    let text = if key.ends_with(".toml") {
                        rewrite(text)
                    } else {
                        text.to_string()
                    };
                    std::fs::write(dir.join(key), text).expect("write");
                }
            } else if vol.is_some_and(|v| v["secret"].is_object()) {
                // The keys the configuration reads from this mount.
                for key in config
                    .lines()
                    .filter(|l| !l.trim_start().starts_with('#'))
                    .flat_map(|l| l.split('"'))
                    .filter_map(|s| s.strip_prefix(&format!("{path}/")))
                {
                    let value = format!("made-up-{key}-{}", std::process::id());
                    std::fs::write(dir.join(key), format!("{value}\n")).expect("write");
                    secrets.push((key.to_string(), value));
                }
            }
        }
        let args = c["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| here(a.as_str().expect("arg")))
            .collect();
        let env = c["env"]
            .as_array()
            .map(|e| {
                e.iter()
                    .map(|v| {
                        let value = v["value"].as_str().expect("plain env values only");
                        (v["name"].as_str().expect("name").to_string(), here(value))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Pod {
            root,
            args,
            env,
            port,
            secrets,
        }
    }

    fn secret(&self, key: &str) -> &str {
        &self
            .secrets
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no secret {key}"))
            .1
    }
}

/// A pod's daemon the test started, killed if the test ends first.
struct Process {
    child: Child,
    log: PathBuf,
    base: String,
    client: reqwest::Client,
}

impl Pod {
    /// The real binary with the container's arguments, from the laid-out
    /// root.
    fn start(&self) -> Process {
        assert_eq!(self.args.first().map(String::as_str), Some("serve"));
        let log = self.root.path().join("incidentd.log");
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_incidentd"))
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.root.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("spawn incidentd");
        Process {
            child,
            log,
            base: format!("http://127.0.0.1:{}", self.port),
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client"),
        }
    }
}

impl Process {
    /// The URL of a probe of the container spec `c` (`livenessProbe`, …).
    fn probe(&self, c: &Value, probe: &str) -> String {
        let path = c[probe]["httpGet"]["path"].as_str().expect("probe path");
        format!("{}{path}", self.base)
    }

    async fn wait_ready(&mut self, c: &Value) {
        let ready = self.probe(c, "readinessProbe");
        support::wait_until(
            "the readiness probe passes",
            Duration::from_secs(90),
            async || {
                assert!(
                    self.child.try_wait().ok().flatten().is_none(),
                    "incidentd exited"
                );
                support::get_text(&self.client, &ready)
                    .await
                    .is_ok_and(|(s, _)| s == 200)
            },
        )
        .await;
        let live = self.probe(c, "livenessProbe");
        assert_eq!(
            support::get_text(&self.client, &live)
                .await
                .expect("live")
                .0,
            200
        );
    }

    /// Posts one firing Alertmanager alert with `labels` and `token`; the status.
    async fn alert(&self, labels: Value, token: Option<&str>) -> u16 {
        let body = serde_json::json!({"version": "4", "alerts": [{"status": "firing",
            "labels": labels, "startsAt": "2026-03-02T08:00:00Z"}]});
        let mut req = self
            .client
            .post(format!("{}/api/v1/alerts/alertmanager", self.base))
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("post").status().as_u16()
    }

    /// The active incidents as JSON text (`None`: the API refused).
    async fn incidents(&self, token: Option<&str>) -> Result<String, u16> {
        let mut req = self.client.get(format!("{}/api/v1/incidents", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("get");
        match r.status().as_u16() {
            200 => Ok(r.text().await.expect("body")),
            other => Err(other),
        }
    }

    /// SIGTERM as the kubelet sends it: at once not ready, then a clean
    /// exit within the pod's grace period.
    async fn terminate(&mut self, c: &Value, grace: u64) {
        let stopped = Instant::now();
        support::daemon::signal(self.child.id(), "TERM");
        // The signal is handled on the daemon's own time: within the
        // shutdown delay, /readyz turns 503 while the port still answers.
        let ready = self.probe(c, "readinessProbe");
        support::wait_until(
            "/readyz answers 503 after SIGTERM",
            Duration::from_secs(5),
            async || {
                support::get_text(&self.client, &ready)
                    .await
                    .is_ok_and(|(s, _)| s == 503)
            },
        )
        .await;
        let exit = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            assert!(
                stopped.elapsed() < Duration::from_secs(grace),
                "still running after terminationGracePeriodSeconds ({grace} s)"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(exit.success(), "exit status {exit}");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- log ({}) ---\n{}",
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

fn grace(w: &Value) -> u64 {
    w["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds")
}

#[tokio::test]
async fn the_rendered_single_mode_pod_runs_with_its_mounts_probes_and_secrets() {
    let Some(k) = kustomize("the_rendered_single_mode_pod_runs_with_its_mounts_probes_and_secrets")
    else {
        return;
    };
    let objs = objects(&render(&k, "single"));
    let (w, c) = workload(&objs, Mode::Single);
    let pod = Pod::lay_out(&objs, Mode::Single, &[]);
    let laid_out = files_under(pod.root.path());
    let mut daemon = pod.start();
    daemon.wait_ready(c).await;

    // The webhook demands the Secret's token; the API its own.
    let labels = serde_json::json!({"alertname": "KubeApiDown", "job": "apiserver",
        "severity": "critical"});
    assert_eq!(
        daemon.alert(labels.clone(), None).await,
        401,
        "webhook without token"
    );
    let status = daemon
        .alert(labels, Some(pod.secret("webhook-token")))
        .await;
    assert_eq!(status, 200, "webhook with the token");
    assert_eq!(
        daemon.incidents(None).await,
        Err(401),
        "the API without its token"
    );
    let text = daemon
        .incidents(Some(pod.secret("api-token")))
        .await
        .expect("incidents");
    assert!(
        text.contains("kubernetes-api"),
        "the incident is bound to the packaged CMDB's CI: {text}"
    );
    let (status, metrics) = support::get_text(&daemon.client, &format!("{}/metrics", daemon.base))
        .await
        .expect("metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("incidentd_incidents_created_total"),
        "metrics"
    );
    // The README's backup, as `kubectl exec` runs it in the pod: the
    // container's environment finds the configuration and the volume.
    let out = Command::new(env!("CARGO_BIN_EXE_incidentd"))
        .args(["backup", "-"])
        .envs(pod.env.iter().map(|(k, v)| (k, v)))
        .current_dir(pod.root.path().join("var/lib/incidentd"))
        .output()
        .expect("run backup");
    assert!(
        out.status.success() && out.stdout.starts_with(b"SQLite format 3\0"),
        "incidentd backup - in the pod: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.terminate(c, grace(w)).await;

    // The root filesystem is read-only: everything the daemon wrote is on
    // a writable mount (its working directory is the root here, so a
    // relative path would show too).
    let writable: Vec<&str> = c["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .filter(|m| m["readOnly"] != true)
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    for file in files_under(pod.root.path()).difference(&laid_out) {
        let path = format!("/{}", file.display());
        assert!(
            path == "/incidentd.log" || writable.iter().any(|m| path.starts_with(m)),
            "{path} is written outside the writable mounts {writable:?}"
        );
    }
}

/// Every file below `root`, relative to it.
fn files_under(root: &Path) -> std::collections::BTreeSet<PathBuf> {
    let mut found = std::collections::BTreeSet::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(rel) = path.strip_prefix(root) {
                found.insert(rel.to_path_buf());
            }
        }
    }
    found
}

#[test]
fn the_rendered_distributed_configuration_passes_check() {
    let Some(k) = kustomize("the_rendered_distributed_configuration_passes_check") else {
        return;
    };
    // The servers it names are not here: `check` reads every file the
    // configuration names and validates it, without connecting.
    let objs = objects(&render(&k, "distributed"));
    let pod = Pod::lay_out(&objs, Mode::Distributed, &[]);
    let mut check: Vec<String> = vec!["check".into()];
    check.extend(pod.args.iter().skip(1).cloned());
    let out = Command::new(env!("CARGO_BIN_EXE_incidentd"))
        .args(&check)
        .envs(pod.env.iter().map(|(k, v)| (k, v)))
        .current_dir(pod.root.path())
        .output()
        .expect("run check");
    assert!(
        out.status.success(),
        "incidentd {check:?} refused the distributed configuration:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two replicas of the rendered Deployment against the test's PostgreSQL
/// and Kafka-protocol broker: either takes webhooks, both see the shared
/// record, and a terminated one hands its partitions to the other.
#[tokio::test]
async fn two_rendered_distributed_pods_share_the_work_and_hand_it_over() {
    let test = "two_rendered_distributed_pods_share_the_work_and_hand_it_over";
    let Some(k) = kustomize(test) else {
        return;
    };
    let (Ok(pg), Ok(brokers)) = (
        std::env::var(support::pg::PG_URL_VAR),
        std::env::var("INCIDENTD_TEST_KAFKA_BROKERS"),
    ) else {
        eprintln!(
            "skipping {test}: needs {} and INCIDENTD_TEST_KAFKA_BROKERS",
            support::pg::PG_URL_VAR
        );
        return;
    };
    let db = support::pg::ScratchDb::create(&pg, "k8s").await;
    let unique = format!("{}-{}", std::process::id(), support::free_ports(1)[0]);
    let topic = format!("incidentd-ingest-k8s-{unique}");
    support::create_topic(&brokers, &topic, 2).await;
    let settings = [
        ("url = \"postgres://", format!("url = \"{}\"", db.url)),
        ("brokers = ", format!("brokers = \"{brokers}\"")),
        (
            "group_id = ",
            format!("group_id = \"incidentd-k8s-{unique}\""),
        ),
        ("ingest_topic = ", format!("ingest_topic = \"{topic}\"")),
        (
            "dead_letter_topic = ",
            format!("dead_letter_topic = \"{topic}-dead\""),
        ),
    ];
    let objs = objects(&render(&k, "distributed"));
    let (w, c) = workload(&objs, Mode::Distributed);
    let (pod_a, pod_b) = (
        Pod::lay_out(&objs, Mode::Distributed, &settings),
        Pod::lay_out(&objs, Mode::Distributed, &settings),
    );
    let (mut a, mut b) = (pod_a.start(), pod_b.start());
    a.wait_ready(c).await;
    b.wait_ready(c).await;
    let (hook, api) = (pod_a.secret("webhook-token"), pod_a.secret("api-token"));

    // A webhook to either replica becomes an incident both show.
    let first = serde_json::json!({"alertname": "KubeApiDown", "job": "apiserver"});
    assert_eq!(a.alert(first, Some(hook)).await, 200);
    support::wait_until(
        "replica b shows the incident",
        Duration::from_secs(60),
        async || {
            b.incidents(Some(api))
                .await
                .is_ok_and(|t| t.contains("KubeApiDown"))
        },
    )
    .await;

    // Replica a terminates: it drains and hands over; b owns every
    // partition and turns the next webhook into an incident.
    a.terminate(c, grace(w)).await;
    let second = serde_json::json!({"alertname": "EtcdNoLeader", "job": "etcd"});
    assert_eq!(b.alert(second, Some(hook)).await, 200);
    support::wait_until(
        "the surviving replica handles it",
        Duration::from_secs(90),
        async || {
            b.incidents(Some(api))
                .await
                .is_ok_and(|t| t.contains("EtcdNoLeader") && t.contains("KubeApiDown"))
        },
    )
    .await;
    b.terminate(c, grace(w)).await;
}
