//! Rendering the shipped templates and refusing broken or overreaching ones.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use previewd_environments::kinds::Kind;
use previewd_environments::render::{Ownership, POD_SECURITY_LABELS, RenderError, Renderer};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn shipped() -> Renderer {
    Renderer::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates")).unwrap()
}

fn owner() -> Ownership {
    Ownership { instance: "previewd".into(), environment: "app-pr-7-1a2b3c".into(), repo_id: 42, pr: 7 }
}

/// A representative environment: what the engine passes to the templates.
fn context(env: Value, secrets: Value, generated: Value, egress: Value, annotations: Value) -> Value {
    json!({
        "name": "app-pr-7-1a2b3c",
        "host": "app-pr-7-1a2b3c.preview.test",
        "url": "https://app-pr-7-1a2b3c.preview.test",
        "repo": {"id": 42, "owner": "octo", "name": "app"},
        "pr": 7,
        "head_sha": "0123456789abcdef0123456789abcdef01234567",
        "platform_secrets": secrets,
        "generated_secrets": generated,
        "quota": {"cpu": "2", "memory": "4Gi", "pods": 10},
        "limit_range": {
            "default_request": {"cpu": "100m", "memory": "128Mi"},
            "default_limit": {"cpu": "500m", "memory": "512Mi"},
            "max": {"cpu": "2", "memory": "2Gi"}
        },
        "template": "web",
        "services": [{
            "name": "app",
            "image": "registry.preview.test/octo/app:0123456789ab",
            "port": 8080,
            "replicas": 1,
            "command": [],
            "args": [],
            "env": env,
            "platform_secrets": secrets,
            "generated_secrets": generated,
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}},
            "health_check_path": "/healthz",
            "public": true,
            "host": "app-pr-7-1a2b3c.preview.test",
            "url": "https://app-pr-7-1a2b3c.preview.test",
            "route_annotations": annotations,
        }],
        "database": null,
        "image_pull_secrets": [],
        "tls_secret": "wildcard-tls",
        "routing": "ingress",
        "gateway": {"parent_refs": []},
        "asleep": false,
        "ingress": {"class_name": "nginx", "controller_namespace": "ingress-nginx", "tls": "copy", "tls_secret_name": "wildcard-tls", "cert_manager_issuer": "", "annotations": annotations},
        "egress_cidrs": egress,
        "from_fork": false,
        "expires_at": "2026-12-01T12:00:00Z"
    })
}

fn minimal() -> Value {
    context(json!({}), json!([]), json!([]), json!([]), json!({}))
}

fn full() -> Value {
    context(
        json!({"LOG_LEVEL": "debug", "QUOTED": "a \"b\": c\nd"}),
        json!(["db-readonly"]),
        json!(["session-key"]),
        json!(["10.1.0.0/16"]),
        json!({"nginx.ingress.kubernetes.io/proxy-body-size": "8m"}),
    )
}

fn yaml(manifests: &[previewd_environments::render::Manifest]) -> String {
    manifests
        .iter()
        .map(|m| previewd_environments::yaml::to_string(&m.object).unwrap())
        .collect::<Vec<_>>()
        .join("---\n")
}

#[test]
fn minimal_environment_renders_as_snapshotted() {
    let manifests = shipped().render("web", &minimal(), &owner()).unwrap();
    insta::assert_snapshot!("web_minimal", yaml(&manifests));
}

#[test]
fn full_environment_renders_as_snapshotted() {
    let manifests = shipped().render("web", &full(), &owner()).unwrap();
    insta::assert_snapshot!("web_full", yaml(&manifests));
}

#[test]
fn every_object_is_owned_namespaced_and_in_apply_order() {
    let manifests = shipped().render("web", &full(), &owner()).unwrap();
    let kinds: Vec<Kind> = manifests.iter().map(|m| m.kind).collect();
    let mut sorted = kinds.clone();
    sorted.sort();
    assert_eq!(kinds, sorted);
    assert_eq!(kinds[0], Kind::Namespace);
    for m in &manifests {
        let metadata = &m.object["metadata"];
        assert_eq!(metadata["labels"]["previewd.dev/environment"], "app-pr-7-1a2b3c", "{}", m.name);
        assert_eq!(metadata["labels"]["app.kubernetes.io/managed-by"], "previewd");
        if m.kind == Kind::Namespace {
            assert!(metadata.get("namespace").is_none());
            assert_eq!(metadata["labels"]["pod-security.kubernetes.io/enforce"], "restricted");
        } else {
            assert_eq!(metadata["namespace"], "app-pr-7-1a2b3c");
        }
    }
    // Values with YAML-significant characters survive intact.
    let deployment = manifests.iter().find(|m| m.kind == Kind::Deployment).unwrap();
    let env = deployment.object["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap();
    assert!(env.iter().any(|e| e["name"] == "QUOTED" && e["value"] == "a \"b\": c\nd"));
}

fn templates(files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("environments/t");
    std::fs::create_dir_all(&set).unwrap();
    for (name, text) in files {
        std::fs::write(set.join(name), text).unwrap();
    }
    let root = dir.path().to_path_buf();
    (dir, root)
}

const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {{ name }}\n";

fn render_error(files: &[(&str, &str)]) -> String {
    let (_dir, root) = templates(files);
    let renderer = match Renderer::load(&root) {
        Ok(renderer) => renderer,
        Err(e) => return e.to_string(),
    };
    match renderer.render("t", &minimal(), &owner()) {
        Ok(m) => panic!("expected an error, rendered {m:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_template_syntax_error_names_template_and_line() {
    let message = render_error(&[("a.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {{ name }\n")]);
    assert!(message.contains("environments/t/a.yaml") && message.contains("line 4"), "{message}");
}

#[test]
fn an_undefined_variable_names_template_and_line() {
    let message = render_error(&[("a.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {{ nmae }}\n")]);
    assert!(message.contains("environments/t/a.yaml") && message.contains("line 4"), "{message}");
    assert!(message.contains("undefined"), "{message}");
}

#[test]
fn yaml_that_does_not_parse_is_refused_with_its_document() {
    let message = render_error(&[("a.yaml", NAMESPACE), ("b.yaml", "---\nkind: [\n")]);
    assert!(message.contains("environments/t/b.yaml") && message.contains("does not parse"), "{message}");
}

#[test]
fn cluster_scoped_and_unknown_kinds_are_refused() {
    let message = render_error(&[
        ("a.yaml", NAMESPACE),
        ("b.yaml", "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: x\n"),
    ]);
    assert!(message.contains("ClusterRoleBinding is not a kind previewd manages"), "{message}");
    let message = render_error(&[
        ("a.yaml", NAMESPACE),
        ("b.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: kube-system\n"),
    ]);
    assert!(message.contains("`kube-system` is not the environment's namespace"), "{message}");
}

#[test]
fn the_namespace_and_labels_are_forced() {
    let (_dir, root) = templates(&[
        ("a.yaml", NAMESPACE),
        (
            "b.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: kube-system\n  labels:\n    previewd.dev/environment: other\n",
        ),
    ]);
    let manifests = Renderer::load(&root).unwrap().render("t", &minimal(), &owner()).unwrap();
    let config_map = &manifests[1].object["metadata"];
    assert_eq!(config_map["namespace"], "app-pr-7-1a2b3c");
    assert_eq!(config_map["labels"]["previewd.dev/environment"], "app-pr-7-1a2b3c");
}

#[test]
fn pod_security_labels_are_forced_on_the_namespace_whatever_the_template_says() {
    // A template that drops some Pod Security labels and weakens the others.
    let weakened = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {{ name }}\n  labels:\n    \
        pod-security.kubernetes.io/enforce: privileged\n    pod-security.kubernetes.io/enforce-version: v1.0\n    \
        pod-security.kubernetes.io/audit: privileged\n";
    for namespace in [NAMESPACE, weakened] {
        let (_dir, root) = templates(&[("a.yaml", namespace)]);
        let manifests = Renderer::load(&root).unwrap().render("t", &minimal(), &owner()).unwrap();
        let labels = &manifests[0].object["metadata"]["labels"];
        for (key, value) in POD_SECURITY_LABELS {
            assert_eq!(labels[key], value, "{key} on the namespace rendered from {namespace:?}");
        }
    }
}

#[test]
fn a_set_without_namespace_or_an_unknown_set_is_an_error() {
    let message = render_error(&[("a.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n")]);
    assert!(message.contains("renders no Namespace"), "{message}");
    let error = shipped().render("nope", &minimal(), &owner()).unwrap_err();
    assert!(matches!(error, RenderError::UnknownSet { .. }));
    assert!(error.to_string().contains("available: web"));
}
